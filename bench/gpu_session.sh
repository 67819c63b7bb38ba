#!/usr/bin/env bash
# The GPU measurements of issues 7 and 8 as the few device calls a lent GPU allows (../shared/GPU.md: about
# 15 minutes of device time in all, 10 a call). Each stage fits one call and stops itself in time: run it on
# the GPU machine from the checkout's root, with the course data unpacked into ~/hw2 by
# ../shared/tools/gpu-chunks and DLCV_SOURCE_COMMIT set to the commit sent (the copy has no .git; run.json
# records it). What to keep lands in $OUT: the log, the benchmarks' JSON, and for a training run
# runs.tar.gz (its run.json, config.yaml and metrics.csv: `dlcv results publish RUN` makes its row) and, for a
# finished segmentation run, tta.csv (the row of its score with --tta: `dlcv results publish tta.csv`).
#
#   bench/gpu_session.sh test                    the tests only a GPU runs (no course data needed)
#   bench/gpu_session.sh bench                   training and predict throughput, baseline against dlcv, eager
#                                                and compiled, on generated data of the real sizes (no data)
#   bench/gpu_session.sh tta segment|classify [FLAG...]
#                                                time to 0.70 mIoU (FCN-8s from the HED weights) or to 74.16%
#   bench/gpu_session.sh train PRESET [FLAG...]  a shipped preset, resumed if this warm machine holds it from
#                                                an earlier call; stopped by Ctrl-C (last.ckpt kept) before the
#                                                call's limit; once finished, a segmentation run is scored
#                                                with --tta as the graders score it
#
# FLAGs go to `dlcv TASK train`. DLCV_GPU_DEVICE=cpu with a tiny run's flags checks a stage here first, e.g.
#   OUT=/tmp/out DLCV_GPU_DATA=../shared/hw2_data DLCV_GPU_DEVICE=cpu bench/gpu_session.sh tta classify --epochs 1
# On the GPU machine:
#   DLCV_SOURCE_COMMIT=abc1234 bench/gpu_session.sh train strong_unet_vgg16 \
#       --weights ~/hw2/weights/vgg16_features_hed.safetensors
set -uo pipefail
export PYTHONPATH=$PWD/src:$PWD/bench${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:?run on the device machine, which sets OUT}
DATA=${DLCV_GPU_DATA:-$HOME/hw2/hw2_data}
HED=${DLCV_GPU_WEIGHTS:-$HOME/hw2/weights/vgg16_features_hed.safetensors}
DEVICE=${DLCV_GPU_DEVICE:-cuda}
RUNS=${DLCV_GPU_RUNS:-$HOME/runs}
LIMIT_S=${DLCV_GPU_LIMIT_S:-540} # every stage ends by then: the call's 600 s, less the transfers back
exec > >(tee -a "$OUT/log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
left() { echo $((LIMIT_S - SECONDS)); }

case ${1:-} in
test)
    timeout "$(left)" python3 -m pytest -q -p no:cacheprovider tests -k "cuda or test_gpu"
    ;;
bench)
    benches=(
        "train_segment --task segment --generate 512 --steps 20"
        "train_segment_compiled --task segment --generate 512 --steps 20 --compile --rounds 1"
        "train_classify --task classify --generate 5000 --steps 50"
        "train_classify_compiled --task classify --generate 5000 --steps 50 --compile --rounds 1"
    )
    for i in "${!benches[@]}"; do # each bench gets an equal share of the time left
        read -ra bench <<<"${benches[$i]}"
        timeout $(($(left) / (${#benches[@]} + 1 - i))) python3 bench/train_bench.py --device "$DEVICE" --warmup 5 \
            --rounds 2 --workers 12 "${bench[@]:1}" --json "$OUT/${bench[0]}.json"
    done
    timeout "$(left)" python3 bench/predict_bench.py --device "$DEVICE" --generate 257 --json "$OUT/predict.json"
    ;;
tta)
    task=${2:-}
    case $task in
    segment) args=(--data "$DATA/p2_data" --target 0.70 -- --config report_fcn8s --weights "$HED") ;;
    classify) args=(--data "$DATA/p1_data" --target 0.7416 -- --epochs 30 --batch-size 256 --lr 0.2) ;;
    *) echo "usage: $0 tta segment|classify [FLAG...]" >&2 && exit 2 ;;
    esac
    shift 2
    python3 bench/time_to_accuracy.py --task "$task" --device "$DEVICE" --max-minutes "$(($(left) / 60))" \
        --json "$OUT/time_to_accuracy_$task.json" "${args[@]}" --workers 16 "$@"
    ;;
train)
    preset=${2:?usage: $0 train PRESET [FLAG...]}
    shift 2
    task=$(python3 -c "from dlcv.reproduce import experiment_for; print(experiment_for('$preset').task)") || exit 2
    data=$DATA/$([ "$task" = segment ] && echo p2_data || echo p1_data)
    run=$RUNS/$preset
    if [ -f "$run/run.json" ]; then # finished in an earlier call: only scored and packed again
        status=0
    else # continued from the last finished epoch, else started (over a folder with none to keep)
        options=(--config "$preset" --data "$data" --device "$DEVICE" --workers 16 "$@" --overwrite)
        [ -f "$run/last.ckpt" ] && options=(--resume)
        timeout --preserve-status -s INT "$(left)" python3 -m dlcv "$task" train --out "$run" "${options[@]}"
        status=$?
    fi
    if [ $status -eq 0 ] && [ "$task" = segment ]; then
        timeout "$(left)" python3 -m dlcv segment predict --checkpoint "$run/best.ckpt" --input "$data/validation" \
            --output "$run/pred_tta" --tta --batch-size 8 --gt "$data/validation" --results "$OUT/tta.csv"
    fi
    tar -czf "$OUT/runs.tar.gz" -C "$RUNS" --ignore-failed-read "$preset"/{run.json,config.yaml,metrics.csv}
    echo "train $preset: exit $status after $SECONDS s (130: stopped in time; the same call again resumes it)"
    ;;
*) echo "usage: $0 test | bench | tta segment|classify | train PRESET [FLAG...]" >&2 && exit 2 ;;
esac
