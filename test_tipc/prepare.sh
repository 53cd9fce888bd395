#!/bin/bash
# Prepare a TIPC chain: generate the demo data it reads (ppufo downloads nothing).
#   bash test_tipc/prepare.sh test_tipc/configs/<model>/train_infer_python.txt lite_train_lite_infer
# The data root is the chain's own -o Global.data_root=... (norm_train line). All demo sets are
# written (training ends with an eval on every configured test set); TIPC_DEMO_SETS=a,b picks
# fewer. An existing complete root is reused.
set -eo pipefail
FILENAME=${1:+$(readlink -m "$1")}  # before cd: a relative path means the caller's folder
MODE=$2
cd "$(dirname "$0")/.."
source test_tipc/common_func.sh
func_check_args test_tipc/prepare.sh "$FILENAME" "$MODE"
python=$(func_parser_value "$(sed -n 3p "$FILENAME")")
norm_train=$(grep -m1 '^norm_train:' "$FILENAME" || true)
root=$(grep -o 'Global.data_root=[^ ]*' <<< "$norm_train" | head -1 | cut -d= -f2)
root=${root:-./data/tipc_demo}
sets=${TIPC_DEMO_SETS:-all}
if [ -f "$root/.complete" ] && [ "$(cat "$root/.complete")" = "$sets" ]; then
    echo "demo data already in $root ($sets)"
    exit 0
fi
tmp="${root%/}.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
"$python" tools/make_demo_data.py --root "$tmp" --sets "${sets/#all/}" --seed 0
echo "$sets" > "$tmp/.complete"
rm -rf "$root"
mkdir -p "$(dirname "$root")"
mv "$tmp" "$root"
echo "demo data written to $root ($sets)"
