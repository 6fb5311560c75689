#!/usr/bin/env bash
# Runs the whole test suite, then the end-to-end scenarios again on the real tier.
#
# Sim tier: every test, against kube-sim and openshift-sim (and vcsim). nextest runs every
# test in its own process; plain cargo test is the fallback where nextest is absent. Doc
# tests first.
#
# Real tier (VCFM_TIER=real): the controller e2e scenarios against the real etcd,
# kube-apiserver and kube-controller-manager and the real machine API and CPMS operators
# (built by `make real-parts`), three at a time (each starts its own control plane), and the
# vcfm binary's deploy/RBAC, plan and bad-input tests.
# Scenarios that inject API-server faults (kube-sim) or faults of the simulated machine
# controller exist on the sim tier only: openshift-sim refuses them on the real tier, so
# they are not in the list below.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Runs both tiers itself: once, in the real-tier pass.
DIFFERENTIAL=a_migration_ends_the_same_on_the_sim_and_the_real_tier

# cargo-nextest from tools/ci/deps.sh (target/tools/bin), else whatever is on PATH.
export PATH="$PWD/target/tools/bin:$PATH"
if cargo nextest --version >/dev/null 2>&1; then
  cargo test --workspace --all-features --doc
  # Test threads: .config/nextest.toml (above the core count: tests mostly wait).
  cargo nextest run --workspace --all-features --no-fail-fast -E "not test($DIFFERENTIAL)"
else
  cargo test --workspace --all-features --no-fail-fast -- --skip "$DIFFERENTIAL"
fi

echo "test: real tier"
# Each real-tier scenario starts its own etcd, apiserver, controller-manager, machine API
# and CPMS operators and vcsims on free loopback ports, so two run at once
# (VCFM_REAL_TEST_THREADS); most of their time is spent waiting on those processes.
REAL_THREADS="${VCFM_REAL_TEST_THREADS:-2}"
status=0
# real_tier <cargo selection...> -- <test name filters...>
real_tier() {
  local sel=()
  while [ "$1" != -- ]; do sel+=("$1"); shift; done
  shift
  if cargo nextest --version >/dev/null 2>&1; then
    VCFM_TIER=real cargo nextest run --profile real --all-features --no-fail-fast \
      --test-threads "$REAL_THREADS" "${sel[@]}" -- "$@" || status=1
  else
    VCFM_TIER=real cargo test --all-features --no-fail-fast "${sel[@]}" \
      -- --test-threads=1 "$@" || status=1
  fi
}

# Each name filters the tests of the binaries before it; every scenario below also ran on
# the sim tier in the first pass.
real_tier -p vcfm-controller \
  --test migration_automatic --test migration_manual_rollback --test migration_crash_outage \
  --test phases_5_10 --test phases_5_10_faults --test differential --test migration_roles \
  --test rollback_undo --test vcenter_transient --test leader_election --test migration_deletion \
  --test source_topology --test admission_policies --test zone_affinity --test combined_proof \
  --test second_migration --test installer_seeds \
  -- \
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
  a_cluster_as_the_4_ \
  "$DIFFERENTIAL"

# The vcfm binary on the real tier: installed by `kubectl apply -k deploy/` and run as the
# shipped service account with RBAC enforced, `vcfm plan`, and bad input refused by
# Preflight (the tests that inject kube-sim API faults stay on the sim tier).
real_tier -p vcfm --test deploy --test plan --test controller_bad_input -- \
  migrations_pass_with_rbac_enforced_and_every_rule_is_used_or_justified \
  plan_prints_the_changes_and_changes_nothing \
  credential_problems_are_named_with_the_fix \
  unknown_inventory_and_unreachable_vcenter_are_named \
  every_problem_is_reported_at_once \
  the_api_server_rejects_malformed_specs_before_the_controller_sees_them
exit $status
