#!/bin/sh
# Make sure the Fashion-MNIST IDX files are present: $ROBUSTLENS_DATA if set, else Debian's
# dataset-fashion-mnist package (installed with apt when it is missing and apt is usable).
set -u
if [ -n "${ROBUSTLENS_DATA:-}" ]; then
    exit 0  # the user points at their own copy; robustlens checks it when it reads it
fi
DIR=/usr/share/datasets/fashion-mnist
have_files() { [ -f "$DIR/train-images-idx3-ubyte.gz" ] && [ -f "$DIR/t10k-labels-idx1-ubyte.gz" ]; }
have_files && exit 0

if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi
    if [ "$SUDO" != none ]; then
        echo "Installing Debian's dataset-fashion-mnist (Fashion-MNIST, about 30 MB)..."
        $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
            || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; }
        have_files && exit 0
    fi
fi
cat >&2 <<MSG
Fashion-MNIST is missing. Do one of:
  sudo apt-get install dataset-fashion-mnist        (Debian/Ubuntu; files go to $DIR)
  export ROBUSTLENS_DATA=/path/to/folder            (a folder with the four IDX .gz files:
      train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz
      t10k-images-idx3-ubyte.gz  t10k-labels-idx1-ubyte.gz)
then run the command again.
MSG
exit 1
