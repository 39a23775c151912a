#!/usr/bin/env bash
# The whole job on the built-in default: an emulated Raspberry Pi 4 (arm64, Cortex-A72 under qemu-user,
# real ARM sshd in its own network namespace), torchvision's ImageNet MobileNetV2 from a PyPI wheel.
#   fp32 ncnn model -> calibrate + quantize (auto method, mixed precision) -> cross-check on held-out
#   labelled photos -> push int8 model + ncnn aarch64 runtime over SSH -> run there, timing streamed live.
# Run `make demo` (it runs scripts/setup.sh first). Needs root for the emulated board.
#
# The board belongs to the simulator instance of the targets folder (./targets; DEMO_TARGETS_DIR moves
# it, DEPLOYER_SIM_DIR too): boards of other checkouts are never touched. If a step fails, the demo
# says which and stops the boards it started itself (a board that was already up stays up).
# DEMO_ROOT (default: the repository) is where build/ goes; the end-to-end test uses a temp folder.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/${VENV:-.venv}/bin:$PATH"
ROOT=${DEMO_ROOT:-.}
TARGETS=${DEMO_TARGETS_DIR:-targets}
BUILD=$ROOT/build
PROFILE=profiles/mobilenet_v2.yaml
if [ "$ROOT" != . ]; then   # the profile's paths are relative to its folder (../build/...): give it one next to BUILD
  mkdir -p "$ROOT/profiles"
  cp "$PROFILE" "$ROOT/profiles/"
  PROFILE=$ROOT/profiles/mobilenet_v2.yaml
fi

BOLD='' PLAIN=''
if [ -t 2 ] && [ -z "${NO_COLOR:-}" ] && [ "${TERM:-dumb}" != dumb ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; fi
CURRENT="start"
step() { CURRENT="$*"; printf '\n%s== %s%s\n' "$BOLD" "$*" "$PLAIN" >&2; }

STARTED=()   # boards this demo started: stopped again if it fails
on_exit() {
  local rc=$?
  trap - EXIT
  if [ "$rc" -ne 0 ]; then
    printf 'demo: FAILED at step %s (exit %d); see the error above\n' "$CURRENT" "$rc" >&2
    if [ ${#STARTED[@]} -gt 0 ]; then
      printf 'demo: stopping the board(s) it started: %s\n' "${STARTED[*]}" >&2
      deployer sim down --targets-dir "$TARGETS" "${STARTED[@]}" >&2 || true
    fi
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "1/6" "emulated Raspberry Pi 4 (deployer sim up)"
up=$(deployer sim up --arch arm64 --count 1 --targets-dir "$TARGETS" --json)
mapfile -t STARTED < <(python -c 'import json,sys; print("\n".join(json.load(sys.stdin)["added"]))' <<<"$up" | sed '/^$/d')
BOARD=$(python -c 'import json,sys; d=json.load(sys.stdin); print((d["added"] + d["already_up"])[0])' <<<"$up")
SIM=$TARGETS/sim.yaml
printf '%s is up (%s), listed in %s\n' "$BOARD" "$([ ${#STARTED[@]} -gt 0 ] && echo "started now" || echo "was already up")" "$SIM" >&2

step "2/6" "real model and data from wheels: MobileNetV2 -> ncnn fp32 (pnnx), calibration, held-out photos"
python -m examples.zoo mobilenet_v2 --out "$BUILD"
python -m examples.data calibration --out "$BUILD/calib"
python -m examples.data imagenet-views --out "$BUILD/eval"
python -m examples.data imagenet --out "$BUILD/imagenet"

step "3/6" "quantize ($PROFILE)"
deployer quantize --profile "$PROFILE"

step "4/6" "cross-check int8 against fp32 on 20 held-out labelled ImageNet photos"
deployer check --profile "$PROFILE" --images "$BUILD/imagenet/list.txt"

INT8=$BUILD/mobilenet_v2_int8/mobilenet_v2_int8
step "5/6" "push the int8 model and the ncnn runtime to $BOARD"
deployer push "$BOARD" --targets "$SIM" --param "$INT8.param" --bin "$INT8.bin"

step "6/6" "run on $BOARD (NEON int8 under qemu-user: expect ~seconds per inference), timing streamed live"
deployer run "$BOARD" --targets "$SIM" --param "$INT8.param" --bin "$INT8.bin" --results "$BUILD/results" \
    --shape 224,224,3 --iterations 8 --warmup 1 --threads 1 --no-fp16 --compare

# the native runtime is built (and cached) by make setup; without cross compilers the demo ends above
if python -c 'import sys; from deployer.native.build import find_build; sys.exit(find_build("aarch64", layers=True) is None)'; then
  step "+" "per-layer times on $BOARD (native static runtime, NCNN_BENCHMARK build): where int8 pays off vs fp32"
  deployer run "$BOARD" --targets "$SIM" --param "$INT8.param" --bin "$INT8.bin" --results "$BUILD/results" \
      --shape 224,224,3 --iterations 3 --warmup 1 --threads 1 --no-fp16 --runtime native --layers \
      --fp32-param "$BUILD/mobilenet_v2.param" --fp32-bin "$BUILD/mobilenet_v2.bin"
fi

CURRENT="done"
extra=""
[ "$TARGETS" != targets ] && extra=" --targets-dir $TARGETS"
printf '\nDone. The board stays up for more runs: `deployer sim status%s`; `deployer sim down%s` stops it.\n' \
    "$extra" "$extra" >&2
