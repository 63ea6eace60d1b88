#!/usr/bin/env bash
# One command: set up the daemon's environment, install the GIMP 3 plug-in, and (with --demo) start the
# daemon and fill a bundled photo on the OpenCV engine, which needs no GPU and no download.
#
#   bash installer/install.sh [--demo] [--with-diffusers] [--home DIR] [-- INSTALLER-ARGS...]
#
#   --demo            start the daemon (headless) and write demo.png and demo-before-after.png here
#   --with-diffusers  also install torch + diffusers for the generative engines (several GB; torch picks
#                     its default build: install the one for your GPU first if you need another)
#   --home DIR        where the virtual environment lives (default: $GIMP_INPAINT_HOME or
#                     ~/.local/share/gimp-inpaint)
#   INSTALLER-ARGS    passed to `python -m installer install` (e.g. --plugin-dir DIR, --no-shortcut)
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
home="${GIMP_INPAINT_HOME:-$HOME/.local/share/gimp-inpaint}"
demo=0 extra=""
installer_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --demo) demo=1 ;;
    --with-diffusers) extra="[diffusers]" ;;
    --home) home="$2"; shift ;;
    --) shift; installer_args=("$@"); break ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

python="${PYTHON:-python3}"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "gimp-inpaint needs Python 3.11 or newer for its daemon (found $("$python" --version))" >&2; exit 1; }

echo "==> virtual environment: $home/venv"
"$python" -m venv "$home/venv"
"$home/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$repo$extra"

echo "==> GIMP 3 plug-in"
"$home/venv/bin/python" -m installer install "${installer_args[@]}"

if [ "$demo" = 1 ]; then
  log="$home/daemon-demo.out"
  echo "==> starting the daemon (log: $log)"
  "$home/venv/bin/gimp-inpaint-daemon" --no-tray >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    grep -q "listening on" "$log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "the daemon did not start" >&2; exit 1; }
    sleep 0.2
  done
  grep -q "listening on" "$log" || { cat "$log" >&2; echo "the daemon did not start in 20 s" >&2; exit 1; }
  echo "==> demo fill on the OpenCV engine"
  "$home/venv/bin/gimp-inpaint" demo -o "$PWD/demo.png"
  echo "The daemon keeps running (pid $pid) for GIMP: Filters > Generative > Generative Fill... ; stop it with: kill $pid"
fi
