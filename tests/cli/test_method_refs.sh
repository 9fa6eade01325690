#!/usr/bin/env bash
# test_method_refs.sh — the citations of the method page resolve: every
# "METHOD §X" (or "docs/METHOD.md §X") in src/, include/, tests/, tools/,
# scripts/, bench/, docs/, configs/, README.md and the Makefile names a
# section heading that docs/METHOD.md has, so do the page's own "§X"
# cross-references, and no citation of the old out-of-tree spec is left.
# The checker first runs on a small tree built here, where it must find
# the planted bad citations, then on the repository.
# once: reads text files only, runs no moe code
set -u
cd "$(dirname "$0")/../.." || exit 1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
. tests/cli/lib.sh

OLD='SP''EC'   # spelled in two pieces so that this file does not match itself

# sections FILE: the section number of every heading ("## 2. X", "### 2.1 X", "#### 2.4.1 X")
sections() {
  perl -ne 'print "$1\n" if /^#{2,6}\s+(\d+(?:\.\d+)*)\.?\s/' "$1"
}

# citations ROOT: "PATH:LINE:NUMBER" for every METHOD citation under ROOT,
# the §-numbers listed right after one included ("METHOD §2.3, §2.4"), and
# for every internal "§X" of ROOT/docs/METHOD.md (one not preceded by a
# paper's name, as in "ReMoE §3.3"). This file is skipped: it plants some.
citations() {
  local root=$1
  (cd "$root" && find src include tests tools scripts bench docs configs README.md Makefile \
     -type f -print0 2>/dev/null | sort -z | xargs -0 perl -e '
    my $num = qr/\d+(?:\.\d+)*/;
    my $works = qr/(?:ReMoE|CartesianMoE|Switch|ST-MoE|GRIN|SparseMixer|Lory|DeepSeekMoE|Mixtral|Megatron-LM)/;
    for my $f (@ARGV) {
      next if $f eq "tests/cli/test_method_refs.sh" || !-T $f;   # this file plants bad ones
      open my $h, "<", $f or next;
      local $/; my $s = <$h>; close $h;
      my $line = sub { 1 + (substr($s, 0, $_[0]) =~ tr/\n//) };
      while ($s =~ /METHOD(?:\.md)?[\s*#\/]*§($num)((?:\s*(?:,|and|or|\/)\s*§$num)*)/g) {
        my ($first, $rest, $at) = ($1, $2, $-[0]);
        print "$f:", $line->($at), ":$first\n";
        print "$f:", $line->($at), ":$1\n" while $rest =~ /§($num)/g;
      }
      next unless $f eq "docs/METHOD.md";
      while ($s =~ /(?:(\S+)[ \t]+)?§($num)/g) {
        my ($word, $n, $at) = ($1 // "", $2, $-[0]);
        next if $word =~ /METHOD/;                            # counted above
        next if $word =~ /^\(?$works(?:\x27s)?$/;              # another work: "ReMoE §3.3"
        print "$f:", $line->($at), ":$n\n";
      }
    }')
}

# check_tree ROOT: prints one line per broken citation; non-zero if any
check_tree() {
  local root=$1 bad=0 f ln n
  if [ ! -f "$root/docs/METHOD.md" ]; then echo "docs/METHOD.md is missing"; return 1; fi
  sections "$root/docs/METHOD.md" | sort -u >"$tmp/have"
  citations "$root" >"$tmp/cites" || { echo "the citation scan failed"; return 1; }
  while IFS=: read -r f ln n; do
    grep -qxF "$n" "$tmp/have" || { echo "$f:$ln: cites METHOD §$n, which docs/METHOD.md does not have"; bad=1; }
  done <"$tmp/cites"
  # the old spec: any word OLD (CHANGELOG.md keeps its history and is not scanned)
  if (cd "$root" && grep -rnIwE "$OLD(\.md)?" src include tests tools scripts bench docs configs README.md Makefile \
        2>/dev/null | grep -v '^tests/cli/test_method_refs.sh:') >"$tmp/old"; then
    sed "s/^/cites the out-of-tree spec: /" "$tmp/old"; bad=1
  fi
  return $bad
}

# --- the checker on a planted tree -------------------------------------------
t="$tmp/tree"
mkdir -p "$t/docs" "$t/src"
printf '# M\n\n## 1. Backbone\n\n## 2. Layer\n\n### 2.1 TopK\n\nSee §2.1 and ReMoE §3.3.\n' >"$t/docs/METHOD.md"
printf '/* a.c (METHOD §2.1, docs/METHOD.md §1) */\n' >"$t/src/a.c"
printf '/* b.c (METHOD\n * §1, §2) */\n' >"$t/src/b.c"
if check_tree "$t" >"$tmp/out"; then ok planted_good_tree_passes
else bad "planted_good_tree_passes: $(head -3 "$tmp/out")"; fi
if citations "$t" | grep -qx "src/b.c:1:2"; then ok finds_wrapped_and_listed_citations
else bad "finds_wrapped_and_listed_citations: $(citations "$t" | tr '\n' ' ')"; fi

printf '/* c.c (METHOD §2.2) */\n' >"$t/src/c.c"
if ! check_tree "$t" >"$tmp/out" && grep -q "src/c.c:1: cites METHOD §2.2" "$tmp/out"; then ok planted_missing_section_found
else bad "planted_missing_section_found: $(head -3 "$tmp/out")"; fi
rm "$t/src/c.c"

printf 'See §4.\n' >>"$t/docs/METHOD.md"
if ! check_tree "$t" >"$tmp/out" && grep -q "docs/METHOD.md:.*§4" "$tmp/out"; then ok planted_bad_cross_reference_found
else bad "planted_bad_cross_reference_found: $(head -3 "$tmp/out")"; fi
printf '# M\n\n## 1. Backbone\n\n## 2. Layer\n\n### 2.1 TopK\n' >"$t/docs/METHOD.md"

printf '/* d.c (%s §2.1) */\n' "$OLD" >"$t/src/d.c"
if ! check_tree "$t" >"$tmp/out" && grep -q "out-of-tree spec: src/d.c:1:" "$tmp/out"; then ok planted_old_citation_found
else bad "planted_old_citation_found: $(head -3 "$tmp/out")"; fi
rm "$t/src/d.c"

rm "$t/docs/METHOD.md"
if ! check_tree "$t" >"$tmp/out" && grep -q "METHOD.md is missing" "$tmp/out"; then ok missing_page_found
else bad "missing_page_found: $(head -3 "$tmp/out")"; fi

# --- the repository ----------------------------------------------------------
n=$(citations . | grep -vc '^docs/METHOD.md:')
if [ "$n" -ge 40 ]; then ok "repository_citations_found ($n)"
else bad "repository_citations_found: only $n METHOD citations outside docs/METHOD.md (expected about 60)"; fi
if check_tree . >"$tmp/out"; then ok repository_citations_resolve
else bad "repository_citations_resolve:"; cat "$tmp/out"; fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
