#!/usr/bin/env bash
# Copies the reference SSD code that benchmarks/gpu_check.py times side by side with ours into a scratch folder
# (default .references/, git-ignored: the reference code is never committed to this project):
#
#   nvidia/  NVIDIA DeepLearningExamples, PyTorch/Detection/SSD (SSD300 v1.1): ssd/model.py, ssd/utils.py
#   mlperf/  MLCommons Training, retired_benchmarks/ssd-v1/ssd (the MLPerf SSD reference): ssd300.py, base_model.py,
#            utils.py, train.py
#
# each with its licence and a SOURCE file naming the repository and commit.
#
#   bash scripts/fetch_references.sh [--out DIR] [NVIDIA_REPO [MLPERF_REPO]]
#
# NVIDIA_REPO, MLPERF_REPO: a clone or a bare mirror of each repository (files are read with `git show HEAD:path`,
# so no work tree is needed), or a plain folder holding the repository's files. Default: the mirrors under
# /work/.mirror when they exist, else a shallow, blob-less clone of the public repository (fetches only the files
# read). A GPU machine without network needs the folder carried to it with the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=.references
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
NVIDIA_REPO=${ARGS[0]:-}
MLPERF_REPO=${ARGS[1]:-}
NVIDIA_URL=https://github.com/NVIDIA/DeepLearningExamples.git
MLPERF_URL=https://github.com/mlcommons/training.git
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# source REPO_ARG MIRROR URL NAME: prints the repository to read from (the argument, the mirror, or a fresh clone)
source_repo() {
  if [ -n "$1" ]; then echo "$1"; return; fi
  if [ -d "$2" ]; then echo "$2"; return; fi
  echo "cloning $3 (shallow, files fetched on demand)" >&2
  git clone --quiet --depth 1 --filter=blob:none --no-checkout "$3" "$TMP/$4" >&2
  echo "$TMP/$4"
}

# is_git DIR: DIR is a clone (has .git) or a bare repository, not merely a folder inside some repository
is_git() {
  [ -e "$1/.git" ] || [ "$(git -C "$1" rev-parse --is-bare-repository 2>/dev/null)" = true ]
}

# copy REPO PATH DEST: one file from a git repository's HEAD, or from a plain folder
copy() {
  if is_git "$1"; then
    git -C "$1" show "HEAD:$2" >"$3"
  elif [ -f "$1/$2" ]; then
    cp "$1/$2" "$3"
  else
    echo "fetch_references: $2 not found in $1" >&2
    exit 1
  fi
}

# fetch REPO URL DEST PREFIX LICENSE FILES...: the files under PREFIX, the licence and SOURCE into DEST
fetch() {
  local repo=$1 url=$2 dest=$3 prefix=$4 license=$5
  shift 5
  rm -rf "$dest"
  mkdir -p "$dest"
  for f in "$@"; do copy "$repo" "$prefix/$f" "$dest/$(basename "$f")"; done
  copy "$repo" "$license" "$dest/LICENSE.md"
  local commit=unknown
  if is_git "$repo"; then commit=$(git -C "$repo" rev-parse HEAD); fi
  printf '%s\n%s\ncommit %s\n(copied by scripts/fetch_references.sh from %s; not part of singleshot, never commit it)\n' \
    "$url" "$prefix" "$commit" "$repo" >"$dest/SOURCE"
  echo "fetch_references: $dest <- $repo ($commit)"
}

mkdir -p "$OUT"
repo=$(source_repo "$NVIDIA_REPO" /work/.mirror/NVIDIA+DeepLearningExamples/repo "$NVIDIA_URL" nvidia)
fetch "$repo" "$NVIDIA_URL" "$OUT/nvidia" PyTorch/Detection/SSD PyTorch/Detection/SSD/LICENSE.md \
  ssd/model.py ssd/utils.py
repo=$(source_repo "$MLPERF_REPO" /work/.mirror/mlcommons+training/repo "$MLPERF_URL" mlperf)
fetch "$repo" "$MLPERF_URL" "$OUT/mlperf" retired_benchmarks/ssd-v1/ssd LICENSE.md \
  ssd300.py base_model.py utils.py train.py
