#!/usr/bin/env bash
# Runs the whole test suite, then the end-to-end scenarios again on the real tier.
#
# Sim tier: every test, against kube-sim and openshift-sim (and vcsim). nextest runs every
# test in its own process; plain cargo test is the fallback where nextest is absent. Doc
# tests first.
#
# Real tier (VCFM_TIER=real): the controller e2e scenarios against the real etcd,
# kube-apiserver and kube-controller-manager and the real machine API and CPMS operators
# (built by `make real-parts`), several at a time (each starts its own control plane), and
# the vcfm binary's deploy/RBAC, plan and bad-input tests.
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
# and CPMS operators and vcsims on free loopback ports, so several run at once
# (.config/nextest.toml, profile real; VCFM_REAL_TEST_THREADS overrides it).
REAL_THREADS=()
[ -n "${VCFM_REAL_TEST_THREADS:-}" ] && REAL_THREADS=(--test-threads "$VCFM_REAL_TEST_THREADS")

# The scenarios: test binaries and test-name substrings per package. Every scenario below
# also ran on the sim tier in the first pass.
CONTROLLER_BINARIES=(migration_automatic migration_manual_rollback migration_crash_outage
  phases_5_10 phases_5_10_faults differential migration_roles rollback_undo vcenter_transient
  leader_election migration_deletion source_topology admission_policies zone_affinity
  combined_proof second_migration installer_seeds streaming_lists)
CONTROLLER_TESTS=(
  automatic_migration_
  manual_migration_runs_each_phase_only_after_its_approval
  killed_at_random_points_the_controller_always_finishes_the_same_way
  new_workers_outside_the_machine_network_are_reported
  gate_off_yaml_automatic_teaches_the_target_idempotently_and_rolls_back
  gate_on_ini_manual_teaches_the_target_idempotently_and_rolls_back
  a_degraded_operator_ends_monitor_health_at_its_deadline
  create_tags_reports_conflicts_and_incompatible_categories
  rollback_keeps_what_others_changed_during_the_migration_
  a_vcenter_restart_and_system_error_bursts_are_retried_without_rollback
  a_standby_does_not_take_a_lease_renewed_by_a_holder_whose_clock_is_behind
  deleting_a_migration_
  deleting_past_the_point_of_no_return_is_held_until_forced_and_the_backup_survives
  a_held_deletion_goes_on_to_completion_and_then_lets_go
  a_machine_stuck_deleting_stalls_the_rollback_until_it_is_released
  killed_during_a_deletion_rollback_the_controller_still_rolls_back_and_lets_go
  untagged_source_topology_is_tagged_and_the_migration_completes
  rollback_removes_only_the_source_tags_vcfm_made
  a_source_user_that_cannot_tag_is_refused_by_preflight_with_the_commands
  with_the_policies_
  infra_and_worker_sets_move_with_the_router_budget_and_the_pools
  update_config_completes_only_after_the_pools_rolled_every_node
  a_host_group_zone_migration_puts_the_new_workers_in_its_vm_group
  preflight_refuses_a_zone_
  an_installer_shaped_cluster_with_every_role_moves_and_leaves_nothing_on_the_source
  a_second_migration_after_a_rollback_creates_its_workers
  a_cluster_as_the_4_
  streaming_lists_
  "$DIFFERENTIAL")
# The vcfm binary on the real tier: installed by `kubectl apply -k deploy/` and run as the
# shipped service account with RBAC enforced, `vcfm plan`, and bad input refused by
# Preflight (the tests that inject kube-sim API faults stay on the sim tier).
VCFM_BINARIES=(deploy plan controller_bad_input)
VCFM_TESTS=(
  migrations_pass_with_rbac_enforced_and_every_rule_is_used_or_justified
  plan_prints_the_changes_and_changes_nothing
  credential_problems_are_named_with_the_fix
  unknown_inventory_and_unreachable_vcenter_are_named
  every_problem_is_reported_at_once
  the_api_server_rejects_malformed_specs_before_the_controller_sees_them)

# any PREDICATE NAME...: a filterset matching any of the names (`=`: the binary exactly,
# `~`: the test name contains it).
any() {
  local pred="$1" op="=" out="" n
  shift
  [ "$pred" = test ] && op="~"
  for n in "$@"; do out+="${out:+ | }$pred($op$n)"; done
  echo "($out)"
}

status=0
if cargo nextest --version >/dev/null 2>&1; then
  # One run for both packages, so that the slots never wait for the slowest scenario of
  # the first package before the second starts.
  filter="(package(=vcfm-controller) & $(any binary "${CONTROLLER_BINARIES[@]}") & $(any test "${CONTROLLER_TESTS[@]}"))"
  filter+=" | (package(=vcfm) & $(any binary "${VCFM_BINARIES[@]}") & $(any test "${VCFM_TESTS[@]}"))"
  VCFM_TIER=real cargo nextest run --profile real --all-features --no-fail-fast "${REAL_THREADS[@]}" \
    -p vcfm-controller -p vcfm -E "$filter" || status=1
else
  tests() { local b; for b in "$@"; do echo --test "$b"; done; }
  # shellcheck disable=SC2046
  VCFM_TIER=real cargo test --all-features --no-fail-fast -p vcfm-controller \
    $(tests "${CONTROLLER_BINARIES[@]}") -- --test-threads=1 "${CONTROLLER_TESTS[@]}" || status=1
  # shellcheck disable=SC2046
  VCFM_TIER=real cargo test --all-features --no-fail-fast -p vcfm \
    $(tests "${VCFM_BINARIES[@]}") -- --test-threads=1 "${VCFM_TESTS[@]}" || status=1
fi
exit $status
