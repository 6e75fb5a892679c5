#!/usr/bin/env bash
# The studies of issues 5 and 7, one command each (run from the repository root; uses .venv/bin
# unless PDEGROW_BIN names another bin/ directory; NP = MPI ranks, default 2). Results:
# experiments/RESULTS.md. Restartable: `pdegrow compare` and transfer_study.py keep finished runs.
#
#   bash experiments/run_studies.sh data          # generate / derive every data set (once)
#   bash experiments/run_studies.sh STUDY         # heat-paper heat-posterior heat-ordering heat-lc heat-tta heat-sensors50 heat-sensors50-regimes heat-default ns-sensors ns-full
#                                                 # ns-full-wide ns-conv ns-simulated ridge ns-reference ns-figure diabetes digits transfer
#                                                 # boston growth-fixes ns-vit digits-vit wind ns-goal4 ns-skip
#   bash experiments/run_studies.sh all           # every study
set -euo pipefail
BIN=${PDEGROW_BIN:-.venv/bin}
NP=${NP:-2}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
compare() { "$BIN/mpiexec" -n "$NP" "$BIN/pdegrow" compare --quiet --config "${CONFIG:-experiments/$1.toml}" --out "runs/${2:-$1}"; }

case "${1:-help}" in
  data)
    [ -f datasets/heat-paper-560.h5 ] || "$BIN/mpiexec" -n "$NP" "$BIN/pdegrow" generate heat --preset paper \
        --n-samples 560 --seed 0 --out datasets/heat-paper-560.h5 --no-progress
    [ -f datasets/heat-sensors50-1050.h5 ] || "$BIN/pdegrow" generate heat --preset sensors50 \
        --n-samples 1050 --seed 0 --out datasets/heat-sensors50-1050.h5 --no-progress
    [ -f datasets/heat-default-1500.h5 ] || "$BIN/mpiexec" -n "$NP" "$BIN/pdegrow" generate heat --preset default \
        --n-samples 1500 --seed 0 --out datasets/heat-default-1500.h5 --no-progress
    [ -f datasets/heat-default-l05-600.h5 ] || "$BIN/mpiexec" -n "$NP" "$BIN/pdegrow" generate heat --preset default \
        --set correlation_length=0.5 --n-samples 600 --seed 1 --out datasets/heat-default-l05-600.h5 --no-progress
    [ -f datasets/ns-32-T5.h5 ] || "$BIN/mpiexec" -n "$NP" "$BIN/pdegrow" generate navier-stokes --resolution 32 \
        --final-time 5.0 --set dt=2.5e-3 --set 'snapshot_times=[0.2,1.0]' --n-samples 600 --seed 0 \
        --out datasets/ns-32-T5.h5 --no-progress
    [ -f datasets/ns32-T5-sensors.h5 ] || "$BIN/python" experiments/ns_time_sets.py datasets/ns-32-T5.h5 --stem datasets/ns32
    [ -f datasets/wind-study.h5 ] || "$BIN/mpiexec" -n "$NP" "$BIN/pdegrow" generate wind --preset study \
        --out datasets/wind-study.h5 --no-progress
    [ -f datasets/wind-study-prior.h5 ] || "$BIN/mpiexec" -n "$NP" "$BIN/pdegrow" generate wind --preset study \
        --set seed=1 --set n_samples=3000 --out datasets/wind-study-prior.h5 --no-progress
    [ -f datasets/wind-study-prior2.h5 ] || "$BIN/mpiexec" -n "$NP" "$BIN/pdegrow" generate wind --preset study \
        --set seed=2 --set n_samples=3000 --out datasets/wind-study-prior2.h5 --no-progress
    [ -f datasets/wind-random.h5 ] || "$BIN/mpiexec" -n "$NP" "$BIN/pdegrow" generate wind --preset random \
        --out datasets/wind-random.h5 --no-progress
    "$BIN/python" experiments/prototype_data.py diabetes digits --overwrite ;;
  heat-paper)   compare study-heat-paper
                "$BIN/python" experiments/summarise_study.py runs/study-heat-paper \
                    --metrics rel_error_field rel_error_field_l2 rel_error_conductivity ;;
  heat-posterior) compare study-heat-paper-posterior
                "$BIN/python" experiments/summarise_study.py runs/study-heat-paper-posterior \
                    --metrics rel_error_field rel_error_field_l2 rel_error_conductivity ;;
  heat-ordering) compare study-heat-paper-ordering
                "$BIN/python" experiments/summarise_study.py runs/study-heat-paper-ordering \
                    --metrics rel_error_field rel_error_conductivity
                "$BIN/python" experiments/paired_tests.py runs/study-heat-paper-ordering \
                    --pairs topological_insertion:random_insertion random_insertion:fixed-same-size \
                    topological_insertion:fixed-same-size topological-x3:fixed-depth4 random-x3:fixed-depth4 \
                    topological-x3:random-x3 topological-early:fixed-same-size topological-early:random-early \
                    topological-strict:fixed-same-size topological-eps:fixed-same-size ;;
  heat-sensors50-regimes) compare study-heat-sensors50-regimes
                "$BIN/python" experiments/summarise_study.py runs/study-heat-sensors50-regimes \
                    --metrics rel_error_field rel_error_conductivity
                "$BIN/python" experiments/paired_tests.py runs/study-heat-sensors50-regimes \
                    --datasets sim20000 sim10000 \
                    --pairs topological_insertion:fixed-same-size
                compare study-heat-sensors50-depth5
                "$BIN/python" experiments/paired_tests.py runs/study-heat-sensors50-depth5 \
                    --datasets sim20000 sim10000 --pairs topological-x4:fixed-depth5 ;;
  heat-sensors50) "$BIN/pdegrow" reference datasets/heat-sensors50-1050.h5 --method map --n-train 500 --n-val 50 \
                    --n-test 500 --threads 1 --no-progress --overwrite
                compare study-heat-sensors50
                compare study-heat-sensors50-labelled
                compare study-heat-sensors50-sim5000
                for s in study-heat-sensors50-labelled study-heat-sensors50-sim5000 study-heat-sensors50; do
                    "$BIN/python" experiments/summarise_study.py "runs/$s" --metrics rel_error_field rel_error_conductivity
                    "$BIN/python" experiments/paired_tests.py "runs/$s" --pairs topological_insertion:fixed-same-size \
                        topological_insertion:random_insertion topological_insertion:topological-fraction05
                done ;;
  heat-tta)     for s in 0 1 2 3 4; do   # seed-major (all strategies of a seed, then the next): load falls alike
                    sed "s/^seeds = .*/seeds = [$s]/" experiments/study-heat-paper-tta.toml > "runs/tta-seed$s.toml"
                    CONFIG="runs/tta-seed$s.toml" compare study-heat-paper-tta
                done
                "$BIN/python" experiments/time_to_accuracy.py runs/study-heat-paper-tta --baseline fixed --per-seed
                "$BIN/python" experiments/paired_tests.py runs/study-heat-paper-tta --datasets n1000 --pairs \
                    layerwise-srl:fixed topological_insertion:fixed random_insertion:fixed \
                    layerwise-srl-short:layerwise-srl layerwise-srl-patience:layerwise-srl \
                    layerwise-nosrl:layerwise-srl topological-early:topological_insertion \
                    layerwise-srl-nophysics:layerwise-srl topological-sample4:topological_insertion \
                    topological-early-sample4:topological-early ;;
  heat-lc)      [ -f datasets/heat-paper-5560.h5 ] || "$BIN/pdegrow" generate heat --preset paper \
                    --n-samples 5560 --seed 0 --out datasets/heat-paper-5560.h5 --no-progress
                [ -f datasets/heat-paper-5560.reference-map.h5 ] || "$BIN/pdegrow" reference \
                    datasets/heat-paper-5560.h5 --method map --samples all --no-progress
                compare study-heat-paper-lc
                compare study-heat-paper-lc-5000 study-heat-paper-lc    # N = 5000 into the same study directory
                "$BIN/python" experiments/learning_curves.py --study runs/study-heat-paper-lc
                "$BIN/python" experiments/paired_tests.py runs/study-heat-paper-lc --datasets n50 n200 n1000 n5000 \
                    --pairs layerwise-srl:fixed topological_insertion:fixed random_insertion:fixed \
                    topological_insertion:random_insertion
                "$BIN/python" experiments/time_to_accuracy.py runs/study-heat-paper-lc --baseline fixed \
                    --datasets n50 n200 n1000 n5000 ;;
  heat-default) compare study-heat-default
                "$BIN/python" experiments/summarise_study.py runs/study-heat-default \
                    --metrics rel_error_field rel_error_field_l2 rel_error_conductivity ;;
  ns-sensors)   compare study-ns-sensors ;;
  ns-full)      compare study-ns-full ;;
  ns-conv)      compare study-ns-conv ;;
  ns-simulated) compare study-ns-simulated
                "$BIN/python" experiments/summarise_study.py runs/study-ns-simulated --metrics rel_error_target
                "$BIN/python" experiments/paired_tests.py runs/study-ns-simulated --datasets T0_2 T1 T5 \
                    --metrics rel_error_target --pairs topological_insertion:fixed-same-size \
                    random_insertion:fixed-same-size ;;
  ns-goal4)     compare study-ns-goal4
                "$BIN/python" experiments/paired_tests.py runs/study-ns-goal4 --datasets T0_2 T1 T5 \
                    --metrics rel_error_target --pairs topological_insertion:fixed-same-size \
                    topological_insertion-early:fixed-same-size topological_insertion-early:topological_insertion
                "$BIN/python" experiments/dead_units.py runs/study-ns-goal4/runs/*/topological_insertion/seed-* ;;
  ns-skip)      compare study-ns-skip      # the goal-4 networks on a frozen ridge skip path
                "$BIN/python" experiments/paired_tests.py runs/study-ns-skip --datasets T0_2 T1 T5 \
                    --metrics rel_error_target --pairs topological_insertion:fixed-same-size \
                    topological_insertion-early:fixed-same-size
                "$BIN/python" experiments/ns_skip_ridge_only.py runs/study-ns-skip/runs/*/*/seed-* ;;
  ns-full-wide) compare study-ns-full-wide ;;
  ns-vit)       compare study-ns-vit ;;
  ridge)        "$BIN/python" experiments/ridge_reference.py ;;
  ns-reference) ref() { "$BIN/pdegrow" reference "datasets/$1.h5" --method "$2" --samples test --n-train 400 \
                    --n-val 50 --n-test "$3" --threads 1 --no-progress --overwrite; }
                ref ns32-T1-full map 50; ref ns32-T0.2-full map 50
                ref ns32-T1-sensors laplace 50; ref ns32-T0.2-sensors laplace 50
                ref ns32-T5-full map 10
                "$BIN/python" benchmarks/bench_reference_ns.py datasets/ns32-T0.2-full.h5 --method laplace \
                    --n-test 5 --rank 1024 --power-iters 0 --write
                "$BIN/python" benchmarks/bench_reference_ns.py datasets/ns32-T1-full.h5 --method laplace \
                    --n-test 5 --rank 256 --power-iters 0 --write ;;
  ns-figure)    "$BIN/python" experiments/ns_fields_figure.py ;;
  wind)         compare study-wind
                compare study-wind-conv
                compare study-wind-conv3d
                compare study-wind-random
                "$BIN/python" experiments/wind_reference.py datasets/wind-study.h5 \
                    --prior datasets/wind-study-prior.h5 datasets/wind-study-prior2.h5 \
                    --prior-sizes 500 1000 2000 3000 6000 --all --out experiments/results/wind-reference.md
                "$BIN/pdegrow" train --config experiments/wind-mlp-prior.toml --data datasets/wind-study-prior.h5 \
                    --out runs/wind-mlp-prior --overwrite
                "$BIN/pdegrow" evaluate runs/wind-mlp-prior --data datasets/wind-study.h5 --no-reference
                "$BIN/python" experiments/wind_reference.py datasets/wind-random.h5 --sizes 400 100 100 \
                    --input inputs/observations_terrain --out experiments/results/wind-random-reference.md
                "$BIN/python" experiments/summarise_study.py runs/study-wind --metrics rel_error_target mse_target \
                    rel_error_level0 rel_error_level1 rel_error_level3 rel_error_level5
                "$BIN/python" experiments/wind_divergence_table.py runs/study-wind datasets/wind-study.h5 \
                    --out experiments/results/wind-divergence.md
                "$BIN/python" experiments/wind_study_figures.py runs/study-wind datasets/wind-study.h5 ;;
  diabetes)     compare study-prototypes-diabetes ;;
  boston)       "$BIN/python" experiments/prototype_data.py boston --overwrite
                "$BIN/python" experiments/prototype_data.py boston --split paper --overwrite
                "$BIN/python" experiments/prototype_data.py boston --split keras --overwrite
                compare study-prototypes-boston
                compare study-prototypes-boston-paper
                compare study-prototypes-boston-levers
                compare study-prototypes-boston-splits
                "$BIN/python" experiments/boston_paper_protocol.py --seeds 0 1 2 3 4 ;;
  growth-fixes) compare study-heat-paper-growth-fixes
                "$BIN/python" experiments/summarise_study.py runs/study-heat-paper-growth-fixes \
                    --metrics rel_error_field rel_error_conductivity ;;
  digits)       compare study-prototypes-digits ;;
  digits-vit)   compare study-prototypes-digits-vit ;;
  transfer)     "$BIN/python" experiments/transfer_study.py --out runs/study-transfer --workers "$NP"
                "$BIN/python" experiments/transfer_study.py --model conv --out runs/study-transfer-conv --workers "$NP"
                "$BIN/python" experiments/transfer_study.py --model heat --out runs/study-transfer-heat --workers "$NP" ;;
  all)          for s in heat-paper heat-posterior heat-ordering heat-lc heat-tta heat-sensors50 heat-sensors50-regimes heat-default ns-sensors ns-full ns-full-wide ns-conv ns-simulated ns-goal4 ns-skip ns-vit ridge ns-reference ns-figure wind diabetes digits digits-vit boston growth-fixes transfer; do
                    "$0" "$s"; done ;;
  *) sed -n 2,10p "$0"; exit 2 ;;
esac
