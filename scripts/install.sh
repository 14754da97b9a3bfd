# Sourced by scripts/demo.sh and .ci/run: creates (or reuses) the virtual environment and installs requirements.txt.
#   GEAR_VENV  where the environment lives (default .venv in the repository)
# Open3D (used only by the synthetic-data generator) needs libusb at import time; it is installed when missing.
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo")
  $SUDO apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libusb-1.0-0; }
fi
VENV=${GEAR_VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
# Reuses the environment when it already satisfies requirements.txt (pip then installs nothing).
python -m pip install -q --disable-pip-version-check -r requirements.txt
