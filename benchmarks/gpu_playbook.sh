#!/usr/bin/env bash
# The GPU playbook: install the project on a lent device machine (one H100/H200, 16 cores, torch
# preinstalled, no network), run the benchmarks, train the carracing preset. benchmarks/GPU.md
# gives the exact sequence of device-tool calls and where the figures get recorded.
#
#   bash benchmarks/gpu_playbook.sh prepare        HERE, with network: wheels into .whl/a and .whl/b
#   bash benchmarks/gpu_playbook.sh prepare-quick  HERE, with network: tyro's wheels into .whl/quick
#   bash benchmarks/gpu_playbook.sh quick          device, one call (carry .whl/quick): learner bench
#   bash benchmarks/gpu_playbook.sh stash          device, call 1 (carry .whl/a): keep the first half
#   bash benchmarks/gpu_playbook.sh install        device, call 2 (carry .whl/b): rejoin ray, pip install
#   bash benchmarks/gpu_playbook.sh bench [learner] [feed] [scaling]    device: JSON lines to $OUT
#   bash benchmarks/gpu_playbook.sh train          device: start training in the background, poll
#   bash benchmarks/gpu_playbook.sh train-status   device: poll again
#   bash benchmarks/gpu_playbook.sh train-finish   device: stop, 20-track eval, curve and metrics to $OUT
#
# Every device stage ends within CALL_LIMIT_S (default 570 s) of its start: the tool kills a
# command at 600 s. The machine goes back 30 s after a call returns, and with it everything
# installed and the training run: chain the calls without a pause. What lives between calls is kept
# in $SACAE_GPU_HOME (outside the repository copy, whose place on the machine may change).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

PY=${PYTHON:-python3}
HOME_DIR=${SACAE_GPU_HOME:-/root/sacae-gpu}
WHEELS=$HOME_DIR/wheels
RUN=${RUN:-$HOME_DIR/run}
OUT=${OUT:-$HOME_DIR/out}
CALL_LIMIT_S=${CALL_LIMIT_S:-570}
POLL_S=${POLL_S:-540}
TRAIN_SECONDS=${TRAIN_SECONDS:-1080}
EVAL_EPISODES=${EVAL_EPISODES:-20}
TRAIN_PRESET=${TRAIN_PRESET:-carracing} # smoke: a quick check of the stages on a CPU
REQUIRE_GPU=${REQUIRE_GPU:-1}
BENCH_DEVICE=${BENCH_DEVICE:-cuda}
STARTED=$SECONDS
SACAE=("$PY" -m launch.cli)
export PYGAME_HIDE_SUPPORT_PROMPT=1 # its banner would land in eval.json

# prepare: the device's Python, and what its image already holds (KINDS.md, read 2026-11-17):
# those are not downloaded, and install never changes them (torch above all).
DEVICE_PY=${DEVICE_PY:-3.12}
PART_LIMIT_MIB=${PART_LIMIT_MIB:-60} # per call: 64 MiB with the working tree, which is ~1 MiB
DEVICE_HAS="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator
lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py
mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja
numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink
nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless
optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark
pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml
regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy
seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq
torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray
xxhash yarl zipp"

say() { echo "playbook: $*"; }
die() {
	echo "playbook: error: $*" >&2
	exit 1
}
left_s() { echo $((CALL_LIMIT_S - (SECONDS - STARTED))); }

# ---- prepare (here) -------------------------------------------------------------------------------

# The project's dependencies (pyproject.toml) and everything they need, as pinned by what is
# installed HERE (the versions the tests pass with), less what the device image holds. imageio's
# ffmpeg extra is left out: its ~30 MB wheel does not fit, and eval videos fall back to GIF.
closure() {
	DEVICE_HAS="$DEVICE_HAS" DEVICE_PY="$DEVICE_PY" "$PY" - <<'EOF'
import importlib.metadata as md
import os
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

env = {
    "python_version": os.environ["DEVICE_PY"],
    "python_full_version": os.environ["DEVICE_PY"] + ".0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
device_has = {canonicalize_name(n) for n in os.environ["DEVICE_HAS"].split()}
roots = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
queue = [Requirement(r.replace("imageio[ffmpeg]", "imageio")) for r in roots]
pins, seen, expected = {}, set(), set()
while queue:
    req = queue.pop()
    name = canonicalize_name(req.name)
    key = (name, frozenset(req.extras))
    if name in device_has:
        expected.add(name)
        continue
    if key in seen:
        continue
    seen.add(key)
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        sys.exit(f"{req} is needed on the device but not installed here: pip install it here first")
    pins[name] = dist.version
    for text in dist.requires or []:
        dep = Requirement(text)
        wanted = [""] + sorted(req.extras)
        if dep.marker is None or any(dep.marker.evaluate({**env, "extra": e}) for e in wanted):
            queue.append(dep)
for name in sorted(pins):
    print(f"{name}=={pins[name]}")
print("expected in the device image:", " ".join(sorted(expected)), file=sys.stderr)
EOF
}

stage_prepare() {
	local platforms=(--platform manylinux1_x86_64 --platform manylinux2014_x86_64)
	local n
	for n in $(seq 17 39); do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
	rm -rf .whl/all .whl/a .whl/b
	mkdir -p .whl/all .whl/a .whl/b
	closure >.whl/all/requirements.txt
	say "downloading for Python $DEVICE_PY: $(tr '\n' ' ' <.whl/all/requirements.txt)"
	"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$DEVICE_PY" \
		--implementation cp "${platforms[@]}" -d .whl/all -r .whl/all/requirements.txt

	# Ray's wheel alone is over a call's 64 MiB: two parts, one per call, rejoined by `install`.
	local ray_whl
	ray_whl=$(find .whl/all -name 'ray-*.whl' | head -n 1)
	[[ -n $ray_whl ]] || die "no ray wheel was downloaded"
	(cd .whl/all && sha256sum -- *.whl >SHA256SUMS)
	split -b 40M -d "$ray_whl" ".whl/a/$(basename "$ray_whl").part-"
	mv .whl/a/*.part-01 .whl/b/
	[[ ! -e .whl/a/$(basename "$ray_whl").part-02 ]] || die "ray's wheel needs more than two parts"
	rm "$ray_whl"

	# The other wheels, largest first, into whichever half has room.
	local limit=$((PART_LIMIT_MIB * 1024 * 1024)) size half f
	while read -r size f; do
		for half in a b; do
			if (($(du -cb .whl/$half | tail -n 1 | cut -f 1) + size <= limit)); then
				mv "$f" .whl/$half/
				continue 2
			fi
		done
		die "the wheels do not fit two calls of ${PART_LIMIT_MIB} MiB"
	done < <(find .whl/all -name '*.whl' -printf '%s %p\n' | sort -rn)
	for half in a b; do cp .whl/all/requirements.txt .whl/all/SHA256SUMS .whl/$half/; done
	rm -rf .whl/all
	local tree
	tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -n 1 | cut -f 1)
	say "working tree that travels: $((tree / 1024)) KiB"
	du -sh .whl/a .whl/b
	say "next: the device calls in benchmarks/GPU.md (carry .whl/a, then .whl/b)"
}

# The learner bench needs neither Ray nor gymnasium: torch (in the image) and tyro, whose two
# dependencies the image lacks. Those wheels are small, so the learner's figures (issue 9's first
# goal) take one call, machine start included, instead of the full install's two.
QUICK_WHEELS="tyro docstring-parser typeguard"

stage_prepare_quick() {
	rm -rf .whl/quick
	mkdir -p .whl/quick
	local name pins=()
	for name in $QUICK_WHEELS; do
		pins+=("$name==$("$PY" -c "import importlib.metadata as md; print(md.version('$name'))")")
	done
	say "downloading for Python $DEVICE_PY: ${pins[*]}"
	"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$DEVICE_PY" \
		--implementation cp -d .whl/quick "${pins[@]}"
	du -sh .whl/quick
	say "next: run \`bash benchmarks/gpu_playbook.sh quick\` with carry [\".whl/quick\"] (benchmarks/GPU.md)"
}

stage_quick() {
	[[ -d .whl/quick ]] || die "no .whl/quick in the carried tree: run prepare-quick here, then carry .whl/quick"
	# shellcheck disable=SC2086 # QUICK_WHEELS is a list of names
	install_wheels .whl/quick $QUICK_WHEELS
	install_project
	"$PY" -c 'import tyro, learner.bench' || die "the learner bench does not import (see above)"
	stage_bench learner
}

# ---- install (device) -----------------------------------------------------------------------------

# install_wheels DIR REQUIREMENT...: install from DIR alone. Nothing preinstalled may change: every
# package of the image is pinned as a constraint.
install_wheels() {
	local dir=$1
	shift
	"$PY" -m pip freeze --exclude-editable | { grep -v ' @ ' || true; } >"$HOME_DIR/preinstalled.txt"
	say "installing $* from $dir (torch stays $(grep -i '^torch==' "$HOME_DIR/preinstalled.txt" || echo '?'))"
	if ! "$PY" -m pip install --quiet --no-index --find-links "$dir" -c "$HOME_DIR/preinstalled.txt" "$@"; then
		# A version the image holds is older than a wheel asks: install as downloaded, and let
		# the import check that follows decide.
		say "resolution failed; installing the wheels without their dependency checks"
		"$PY" -m pip install --quiet --no-index --no-deps "$dir"/*.whl
	fi
}

# The project itself: no dependency resolution (imageio[ffmpeg] is left out on purpose).
install_project() {
	if ! "$PY" -m pip install --quiet --no-index --no-deps --no-build-isolation -e "$REPO"; then
		local site
		site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
		echo "$REPO" >"$site/sacae-repo.pth"
		say "editable install failed; put $REPO on the path with $site/sacae-repo.pth"
	fi
}

stage_stash() {
	mkdir -p "$WHEELS"
	local half found=0
	for half in .whl/a .whl/b; do
		if [[ -d $half ]]; then
			cp -- "$half"/* "$WHEELS"/
			found=1
		fi
	done
	((found)) || die "no .whl/a or .whl/b in the carried tree: name it in the call's carry"
	say "kept in $WHEELS: $(find "$WHEELS" -maxdepth 1 -type f | wc -l) files, $(du -sh "$WHEELS" | cut -f 1)"
}

stage_install() {
	stage_stash
	cd "$WHEELS"
	local parts=(ray-*.whl.part-*)
	if [[ -e ${parts[0]} ]]; then
		((${#parts[@]} == 2)) || die "found ${#parts[@]} parts of ray's wheel, need 2: run stash with .whl/a, then install with .whl/b"
		cat "${parts[@]}" >"${parts[0]%.part-*}"
		rm -- "${parts[@]}"
	fi
	sha256sum --check --quiet SHA256SUMS || die "a wheel does not match SHA256SUMS: run prepare again"
	cd "$REPO"

	install_wheels "$WHEELS" -r "$WHEELS/requirements.txt"
	install_project
	"$PY" -m pip check || say "pip check reports the conflicts above (see whether the check below passes)"
	check_install | tee "$OUT/install.txt"
}

# Imports, a CarRacing step, a Ray round trip and the GPU: what every later stage relies on.
check_install() {
	"$PY" - <<'EOF'
import gymnasium as gym
import ray
import torch
import tyro

import launch.cli  # noqa: F401
from launch.ray_setup import LOCAL, init_ray

env = gym.make("CarRacing-v3")
env.reset(seed=0)
env.step(env.action_space.sample())
init_ray(LOCAL, num_cpus=2)
assert ray.get(ray.remote(lambda: 1).remote(), timeout=60) == 1
ray.shutdown()
print(
    f"install ok: torch {torch.__version__}, cuda {torch.cuda.is_available()} "
    f"({torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}), "
    f"ray {ray.__version__}, gymnasium {gym.__version__}, tyro {tyro.__version__}"
)
EOF
}

require_install() {
	"$PY" -c 'import ray, gymnasium, Box2D, tyro' 2>/dev/null ||
		die "the project's dependencies are not installed on this machine (a fresh one?): run stash and install first"
}

# ---- bench (device) -------------------------------------------------------------------------------

# run_part NAME MIN_S MAX_S CMD...: run CMD with at most MAX_S (and what is left of the call),
# skipped when less than MIN_S is left; stdout into $OUT/bench-NAME.txt. SIGINT first, so the
# bench's own cleanup (ray.shutdown) runs.
run_part() {
	local name=$1 min_s=$2 max_s=$3 left
	shift 3
	left=$(($(left_s) - 15))
	if ((left < min_s)); then
		say "skipping $name: ${left} s left of this call, it needs ${min_s} s; run \`bench $name\` in its own call"
		return 0
	fi
	((left < max_s)) || left=$max_s
	say "$name: $* (at most ${left} s)"
	timeout --signal=INT --kill-after=20 "$left" "$@" 2>>"$OUT/bench.log" | tee "$OUT/bench-$name.txt" ||
		say "$name ended with status $? (a timeout is 124)"
}

device_info() {
	{
		date -u +%FT%TZ
		nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null ||
			echo "no nvidia-smi"
		echo "cpus $(nproc), memory $(free -g | awk '/^Mem/ {print $2}') GiB"
		lscpu | grep -m 1 'Model name' || true
		"$PY" -c 'import importlib.metadata as md, torch
try:
    ray = md.version("ray")
except md.PackageNotFoundError:
    ray = "not installed"
print("torch", torch.__version__, "ray", ray)'
		git -C "$REPO" log -1 --format='commit %H %s' 2>/dev/null || true
	} >"$OUT/device.txt"
	cat "$OUT/device.txt"
}

# The best updates/s of `bench learner` in this call (or an earlier one on this machine).
learner_best() {
	local rows=$HOME_DIR/bench-learner.txt
	[[ -s $rows ]] || {
		echo 0
		return
	}
	grep '^{' "$rows" | "$PY" -c 'import json, sys; print(max([r for r in (json.loads(l)["updates_per_s"] for l in sys.stdin) if r] or [0]))'
}

stage_bench() {
	local parts=("$@")
	((${#parts[@]})) || parts=(learner feed scaling)
	[[ ${parts[*]} == learner ]] || require_install # the learner bench alone needs neither
	device_info
	local part
	for part in "${parts[@]}"; do
		case $part in
		learner)
			# Each row prints as soon as it is measured, the compile rows last. If none printed (a
			# slower machine than planned), the table without the compile rows follows.
			run_part learner 120 360 "${SACAE[@]}" bench learner --device "$BENCH_DEVICE" --variants all \
				--compile on --seconds "${LEARNER_SECONDS:-10}"
			if ! grep -qs '^{' "$OUT/bench-learner.txt"; then
				run_part learner-nocompile 90 200 "${SACAE[@]}" bench learner --device "$BENCH_DEVICE" \
					--variants all --compile off --seconds "${LEARNER_SECONDS:-10}"
			fi
			if grep -qs '^{' "$OUT"/bench-learner*.txt; then
				cat "$OUT"/bench-learner*.txt >"$HOME_DIR/bench-learner.txt"
			fi
			run_part profile 40 90 "${SACAE[@]}" bench learner --device "$BENCH_DEVICE" --profile
			;;
		feed)
			run_part feed 60 180 "${SACAE[@]}" bench feed --device "$BENCH_DEVICE" --shards 1,2,4 \
				--seconds "${FEED_SECONDS:-10}" --learner-updates-per-s "$(learner_best)"
			;;
		scaling)
			run_part scaling 150 540 "${SACAE[@]}" bench scaling --actors 1,2,4,8,12 \
				--seconds "${SCALING_SECONDS:-30}"
			;;
		*) die "unknown bench part '$part': choose from learner feed scaling" ;;
		esac
	done
	say "results under \$OUT: $(cd "$OUT" && echo *)"
}

# ---- train (device) -------------------------------------------------------------------------------

train_pid() {
	local pid
	pid=$(cat "$HOME_DIR/train.pid" 2>/dev/null) || return 1
	kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# One line per poll: time, frames, updates, rates and the last evaluation, from metrics.jsonl.
progress_line() {
	RUN_DIR="$RUN" "$PY" - <<'EOF'
import json, os, pathlib

path = pathlib.Path(os.environ["RUN_DIR"]) / "metrics.jsonl"
rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []
if not rows:
    print("no metric rows yet")
    raise SystemExit
last = rows[-1]
evals = [r for r in rows if "eval/return_mean" in r]
span = last["time"] - rows[0]["time"]
ev = f"eval {evals[-1]['eval/return_mean']:.1f} at {evals[-1]['env_frames']:,}" if evals else "no eval yet"
print(
    f"{span:6.0f} s  frames {last.get('counters/env_frames', 0):,.0f}  "
    f"updates {last.get('learner/updates', 0):,.0f}  "
    f"updates/s {last.get('learner/updates_per_s', 0):.1f}  "
    f"frames/s {last.get('actors/env_frames_per_s', 0):.0f}  {ev}"
)
EOF
}

# Poll the background run until it ends, or until POLL_S (and the call's limit) have passed.
poll() {
	local until=$((SECONDS + POLL_S))
	local stop=$((STARTED + CALL_LIMIT_S - 20))
	((until < stop)) || until=$stop
	while train_pid >/dev/null; do
		echo "$(date -u +%T) $(progress_line)" | tee -a "$OUT/train-progress.txt"
		((SECONDS + 30 < until)) || break
		sleep 30
	done
	if train_pid >/dev/null; then
		say "training still running: call train-status (or train-finish) within 30 s"
	else
		say "training has ended"
	fi
	tail -n 40 "$HOME_DIR/train.log" >"$OUT/train-log-tail.txt" || true
}

stage_train() {
	require_install
	if train_pid >/dev/null; then
		say "training already running (pid $(train_pid)); polling"
		poll
		return
	fi
	[[ ! -e $RUN/config.json ]] || die "$RUN already holds a run: set RUN to a new directory"
	mkdir -p "$(dirname "$RUN")"
	local args=(--preset "$TRAIN_PRESET" --run.address local --run.run-dir "$RUN"
		--run.max-seconds "$TRAIN_SECONDS" --run.no-progress-bar --run.no-eval-video)
	((REQUIRE_GPU)) && args+=(--run.require-gpu)
	# shellcheck disable=SC2206 # TRAIN_EXTRA is a list of extra flags, split on spaces on purpose
	args+=(${TRAIN_EXTRA:-})
	say "starting: sacae train ${args[*]}"
	# A new session (setsid) outlives this command, which the tool ends with its process group;
	# the shell writes its own pid, then becomes the trainer (exec keeps the pid).
	# shellcheck disable=SC2016 # $$ and $@ are the inner shell's
	PYTHONUNBUFFERED=1 setsid bash -c 'echo $$ >"$0"; exec nohup "$@"' \
		"$HOME_DIR/train.pid" "${SACAE[@]}" train "${args[@]}" \
		>"$HOME_DIR/train.log" 2>&1 </dev/null &
	sleep 5
	train_pid >/dev/null || {
		cat "$HOME_DIR/train.log"
		die "training did not start (log above)"
	}
	poll
}

stage_train_finish() {
	local pid waited=0
	if pid=$(train_pid); then
		# SIGTERM ends the run through its `finally`: a final checkpoint, Ray shut down.
		say "stopping training (pid $pid)"
		kill -TERM "$pid"
		while kill -0 "$pid" 2>/dev/null && ((waited < 120)); do
			sleep 2
			waited=$((waited + 2))
		done
		if kill -0 "$pid" 2>/dev/null; then
			say "still running after 120 s: ending its process group"
			kill -KILL -- "-$pid" || true
		fi
	fi
	[[ -d $RUN/checkpoints ]] || die "no run in $RUN"
	tail -n 40 "$HOME_DIR/train.log" >"$OUT/train-log-tail.txt" || true
	progress_line | tee "$OUT/train-progress.txt"
	say "evaluating the newest checkpoint on $EVAL_EPISODES tracks"
	timeout --signal=INT "$(($(left_s) - 30))" "${SACAE[@]}" eval --checkpoint "$RUN" \
		--episodes "$EVAL_EPISODES" | tee "$OUT/eval.json"
	# The learning curve (one row per in-training evaluation), all metrics, the plot, the config.
	grep '"eval/return_mean"' "$RUN/metrics.jsonl" | "$PY" -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    keep = ("env_frames", "time", "eval/return_mean", "eval/return_std", "eval/episode_length_mean")
    print(json.dumps({k: r[k] for k in keep if k in r}))' >"$OUT/curve.jsonl" || true
	gzip -c "$RUN/metrics.jsonl" >"$OUT/metrics.jsonl.gz"
	cp "$RUN/config.json" "$OUT/config.json"
	cp "$RUN/eval/learning_curve.png" "$OUT/" 2>/dev/null || true
	say "results under \$OUT: $(cd "$OUT" && echo *)"
}

# ---- main -----------------------------------------------------------------------------------------

stage=${1:-}
shift || true
case $stage in
stash | install | quick | bench | train | train-status | train-finish) mkdir -p "$HOME_DIR" "$OUT" ;;
esac
case $stage in
prepare) stage_prepare ;;
prepare-quick) stage_prepare_quick ;;
quick) stage_quick ;;
stash) stage_stash ;;
install) stage_install ;;
bench) stage_bench "$@" ;;
train) stage_train ;;
train-status)
	require_install
	poll
	;;
train-finish) stage_train_finish ;;
*)
	sed -n '2,19p' "$0"
	exit 2
	;;
esac
