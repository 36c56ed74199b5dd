#!/usr/bin/env bash
# The test command of the README: installs what the tests need (idempotent), then runs them all,
# including the few integration tests on the real embedded SmolLM2 (marked slow, ~minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# The HTML report test renders the report in headless Chromium (Debian's package).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the report rendering test will fail" >&2
  fi
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec python3 -m pytest -p no:cacheprovider "$@"
