#!/usr/bin/env bash
# One command: set up the daemon's environment, install the GIMP 3 plug-in, and (with --demo) start the
# daemon and fill a bundled photo on the OpenCV engine, which needs no GPU and no download.
#
#   bash installer/install.sh [--demo] [--with-diffusers [--torch BUILD]] [--autostart] [--home DIR]
#                             [-- INSTALLER-ARGS...]
#
#   --demo            start the daemon (headless) unless one already answers, and write demo.png and
#                     demo-before-after.png here
#   --with-diffusers  also install torch + diffusers for the generative engines (several GB), torch in the
#                     build for this machine (`gimp-inpaint-install env` prints which and why)
#   --torch BUILD     auto (default: CUDA by the NVIDIA driver, ROCm, MPS on Apple silicon, else CPU), cpu,
#                     cuda, rocm or mps
#   --autostart       start the daemon at every login (systemd user unit on Linux, LaunchAgent on macOS)
#   --home DIR        where the virtual environment lives (default: $GIMP_INPAINT_HOME or
#                     ~/.local/share/gimp-inpaint)
#   INSTALLER-ARGS    passed to `python -m gimp_inpaint.installer install` (e.g. --plugin-dir DIR, --no-shortcut);
#                     a --config-dir among them is also given to the demo's daemon and client
#
# Runs on bash 3.2 (macOS): an empty array is expanded as ${a[@]+"${a[@]}"}, which `set -u` accepts there.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
home="${GIMP_INPAINT_HOME:-$HOME/.local/share/gimp-inpaint}"
demo=0 diffusers=0 torch=auto
installer_args=() autostart_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --demo) demo=1 ;;
    --with-diffusers) diffusers=1 ;;
    --torch) torch="$2"; shift ;;
    --autostart) autostart_args=(--autostart) ;;
    --home) home="$2"; shift ;;
    --) shift; installer_args=("$@"); break ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

python="${PYTHON:-python3}"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "gimp-inpaint needs Python 3.11 or newer for its daemon (found $("$python" --version))" >&2; exit 1; }

echo "==> virtual environment: $home/venv"
"$python" -m venv "$home/venv"
"$home/venv/bin/python" -m pip install --quiet --disable-pip-version-check -c "$repo/installer/requirements/lock.txt" "$repo"
if [ "$diffusers" = 1 ]; then
  echo "==> torch and diffusers"
  "$home/venv/bin/python" -m gimp_inpaint.installer env --with-diffusers --torch "$torch" \
    --python "$home/venv/bin/python" --source "$repo"
fi

echo "==> GIMP 3 plug-in"
"$home/venv/bin/python" -m gimp_inpaint.installer install ${autostart_args[@]+"${autostart_args[@]}"} \
  ${installer_args[@]+"${installer_args[@]}"}

if [ "$demo" = 1 ]; then
  config_args=()  # the installer's --config-dir, if given, for the daemon and the client too
  previous=""
  for arg in ${installer_args[@]+"${installer_args[@]}"}; do
    case "$previous" in --config-dir) config_args=(--config-dir "$arg") ;; esac
    case "$arg" in --config-dir=*) config_args=("$arg") ;; esac
    previous="$arg"
  done
  if "$home/venv/bin/gimp-inpaint" status ${config_args[@]+"${config_args[@]}"} >/dev/null 2>&1; then
    echo "==> a gimp-inpaint daemon already answers: using it"
    pid=""
  else
    log="$home/daemon-demo.out"
    echo "==> starting the daemon (log: $log)"
    "$home/venv/bin/gimp-inpaint-daemon" --no-tray ${config_args[@]+"${config_args[@]}"} >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
      grep -q "listening on" "$log" 2>/dev/null && break
      kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "the daemon did not start" >&2; exit 1; }
      sleep 0.2
    done
    grep -q "listening on" "$log" || { cat "$log" >&2; echo "the daemon did not start in 20 s" >&2; exit 1; }
  fi
  echo "==> demo fill on the OpenCV engine"
  "$home/venv/bin/gimp-inpaint" demo -o "$PWD/demo.png" ${config_args[@]+"${config_args[@]}"}
  if [ -n "$pid" ]; then
    echo "The daemon keeps running (pid $pid) for GIMP: Filters > Generative > Generative Fill... ; stop it with: kill $pid"
  fi
fi
