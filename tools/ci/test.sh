#!/usr/bin/env bash
# Runs the whole test suite, then the end-to-end scenarios again on the real tier.
#
# Sim tier: every test, against kube-sim and openshift-sim (and vcsim). nextest runs every
# test in its own process; plain cargo test is the fallback where nextest is absent. Doc
# tests first.
#
# Real tier (VCFM_TIER=real): the controller e2e scenarios against the real etcd,
# kube-apiserver and kube-controller-manager and the real machine API and CPMS operators
# (built by `make real-parts`), one at a time (each starts its own control plane).
# Scenarios that inject API-server faults (kube-sim) or faults of the simulated machine
# controller exist on the sim tier only: openshift-sim refuses them on the real tier, so
# they are not in the list below.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Runs both tiers itself: once, in the real-tier pass.
DIFFERENTIAL=a_migration_ends_the_same_on_the_sim_and_the_real_tier

if cargo nextest --version >/dev/null 2>&1; then
  cargo test --workspace --all-features --doc
  cargo nextest run --workspace --all-features --no-fail-fast -E "not test($DIFFERENTIAL)"
else
  cargo test --workspace --all-features --no-fail-fast -- --skip "$DIFFERENTIAL"
fi

echo "test: real tier"
# Each name filters the tests of the binaries above it; every scenario below also ran on
# the sim tier in the first pass.
VCFM_TIER=real cargo test -p vcfm-controller --all-features \
  --test migration_automatic --test migration_manual_rollback --test migration_crash_outage \
  --test phases_5_10 --test phases_5_10_faults --test differential --test migration_roles \
  --test rollback_undo --test vcenter_transient --test leader_election --test migration_deletion \
  --test source_topology --test admission_policies --test zone_affinity --test combined_proof --test second_migration \
  -- --test-threads=1 \
  automatic_migration_ \
  manual_migration_runs_each_phase_only_after_its_approval \
  killed_at_random_points_the_controller_always_finishes_the_same_way \
  new_workers_outside_the_machine_network_are_reported \
  gate_off_yaml_automatic_teaches_the_target_idempotently_and_rolls_back \
  gate_on_ini_manual_teaches_the_target_idempotently_and_rolls_back \
  a_degraded_operator_ends_monitor_health_at_its_deadline \
  create_tags_reports_conflicts_and_incompatible_categories \
  rollback_keeps_what_others_changed_during_the_migration_ \
  a_vcenter_restart_and_system_error_bursts_are_retried_without_rollback \
  a_standby_does_not_take_a_lease_renewed_by_a_holder_whose_clock_is_behind \
  deleting_a_migration_ \
  deleting_past_the_point_of_no_return_is_held_until_forced_and_the_backup_survives \
  a_held_deletion_goes_on_to_completion_and_then_lets_go \
  a_machine_stuck_deleting_stalls_the_rollback_until_it_is_released \
  killed_during_a_deletion_rollback_the_controller_still_rolls_back_and_lets_go \
  untagged_source_topology_is_tagged_and_the_migration_completes \
  rollback_removes_only_the_source_tags_vcfm_made \
  a_source_user_that_cannot_tag_is_refused_by_preflight_with_the_commands \
  with_the_policies_ \
  infra_and_worker_sets_move_with_the_router_budget_and_the_pools \
  update_config_completes_only_after_the_pools_rolled_every_node \
  a_host_group_zone_migration_puts_the_new_workers_in_its_vm_group \
  preflight_refuses_a_zone_ \
  an_installer_shaped_cluster_with_every_role_moves_and_leaves_nothing_on_the_source \
  a_second_migration_after_a_rollback_creates_its_workers \
  "$DIFFERENTIAL"
