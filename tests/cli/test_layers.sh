#!/usr/bin/env bash
# test_layers.sh — the layers of docs/ARCHITECTURE.md hold: no file of src/
# and no public header includes a header of a higher layer, of a sibling
# folder on its own layer, or another folder's private header. The table
# (folders, layers, the public headers each owns) and the known exceptions
# are read from docs/ARCHITECTURE.md. The checker first runs on small trees
# built here, where it must find the planted crossings, then on the
# repository. Last, every global symbol libmoe.a defines starts with moe_.
# once: reads text files and the library's symbol table, runs no moe code
set -u
cd "$(dirname "$0")/../.." || exit 1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
. tests/cli/lib.sh

# check_tree ROOT: one line per broken rule (and "N includes checked" last,
# on stderr); non-zero if any rule is broken
check_tree() {
  perl - "$1" <<'PERL'
use strict; use warnings;
my $root = shift;
open my $doc, "<", "$root/docs/ARCHITECTURE.md" or do { print "docs/ARCHITECTURE.md is missing\n"; exit 1 };
my (%level, %unit_of, %allow, %used, $block);
while (<$doc>) {
  if (/^```(layers|layer-exceptions)\s*$/) { $block = $1; next }
  if (/^```/) { $block = undef; next }
  next if !$block || /^\s*(#|$)/;
  my @f = split;
  if ($block eq "layers") {
    my ($lv, $unit) = @f;
    $level{$unit} = $lv;
    $unit_of{$_} = $unit for split /\+/, $unit;
  } else {
    $allow{"$f[0] $f[1]"} = 1;
  }
}
close $doc;
if (!%level) { print "docs/ARCHITECTURE.md has no ```layers block\n"; exit 1 }

my @files = (glob("$root/src/*.c"), glob("$root/src/*/*.[ch]"), glob("$root/include/moe/*.h"), glob("$root/include/moe/*/*.h"));
my ($bad, $n) = (0, 0);
sub say_bad { print "$_[0]\n"; $bad = 1 }
# the unit of a file: its folder's, main.c's is cli's, a public header
# include/moe/F/x.h that of src/F/
sub unit_of_file {
  my ($rel) = @_;
  return $unit_of{cli} if $rel =~ m{^src/[^/]+\.c$};
  return $unit_of{$1} if $rel =~ m{^src/([^/]+)/};
  return $unit_of{$1} if $rel =~ m{^include/moe/([^/]+)/[^/]+$};
  return undef;
}
my %folder_reported;
for my $path (sort @files) {
  (my $rel = $path) =~ s{^\Q$root\E/}{};
  my $unit = unit_of_file($rel);
  if (!defined $unit) {
    if ($rel =~ m{^src/([^/]+)/}) {
      say_bad("src/$1/ is in no layer: add it to the layers block of docs/ARCHITECTURE.md") unless $folder_reported{$1}++;
    } else {
      say_bad("$rel belongs to no layer: public headers live in include/moe/F/ for a folder F of the layers block of docs/ARCHITECTURE.md");
    }
    next;
  }
  my ($own_folder) = $rel =~ m{^src/([^/]+)/};
  $own_folder = "cli" if $rel =~ m{^src/[^/]+\.c$};    # src/main.c is part of cli/
  open my $h, "<", $path or next;
  while (my $line = <$h>) {
    next unless $line =~ /^\s*#\s*include\s*"([^"]+)"/;
    my $inc = $1;
    $n++;
    my ($hunit, $what);
    if ($inc =~ m{^moe/}) {
      $hunit = $inc =~ m{^moe/([^/]+)/[^/]+\.h$} ? $unit_of{$1} : undef;
      if (!defined $hunit) {
        say_bad("$rel:$.: includes $inc, which belongs to no layer: public headers are moe/F/NAME.h for a folder F of the layers block of docs/ARCHITECTURE.md");
        next;
      }
    } elsif (defined $own_folder && -e "$root/src/$own_folder/$inc") {
      next;                                             # a private header of its own folder
    } elsif ($inc =~ m{^([^/]+)/} && -d "$root/src/$1") {
      next if defined $own_folder && $1 eq $own_folder;
      $what = "another folder's private header";
    } else {
      say_bad("$rel:$.: includes \"$inc\", which is neither moe/NAME.h nor a header of src/");
      next;
    }
    if (!$what) {
      next if $hunit eq $unit || $level{$hunit} < $level{$unit};
      $what = "$hunit, layer $level{$hunit}";
    }
    if ($allow{"$rel $inc"}) { $used{"$rel $inc"} = 1; next }
    say_bad("$rel:$.: includes $inc ($what) from $unit (layer $level{$unit})");
  }
  close $h;
}
for (sort keys %allow) {
  say_bad("the exception \"$_\" in docs/ARCHITECTURE.md no longer occurs: remove it") unless $used{$_};
}
print STDERR "$n includes checked\n";
exit $bad;
PERL
}

# plant ROOT [EXCEPTION]: a small clean tree (util < model+moe < train, eval
# < cli), with EXCEPTION ("FILE HEADER why") as its one known crossing
plant() {
  local r=$1 fence='```'
  rm -rf "$r"; mkdir -p "$r/docs" "$r"/include/moe/{util,model,moe,eval,train,run} "$r/src/util" "$r/src/model" "$r/src/moe" "$r/src/cli" "$r/src/eval" "$r/src/train"
  printf '%s\n' "# A" "" "${fence}layers" "# layer folder" "9 cli" "4 train" "4 eval" \
    "3 model+moe" "0 util" "$fence" "" "${fence}layer-exceptions" "# file header why" \
    "${2:-}" "$fence" >"$r/docs/ARCHITECTURE.md"
  printf '#include "moe/util/common.h"\n' >"$r/include/moe/model/model.h"
  printf '#include "moe/model/model.h"\n' >"$r/include/moe/moe/router.h"
  : >"$r/include/moe/util/common.h"; : >"$r/include/moe/eval/eval.h"; : >"$r/include/moe/train/train.h"
  printf '#include "moe/util/common.h"\n' >"$r/src/util/common.c"
  printf '#include "moe/moe/router.h"\n#include "moe/util/common.h"\n' >"$r/src/model/model.c"
  printf '#include "moe/model/model.h"\n' >"$r/src/moe/topk.c"
  printf '#include "moe/eval/eval.h"\n' >"$r/src/eval/loss.c"
  printf '#include "moe/train/train.h"\n#include "moe/model/model.h"\n' >"$r/src/train/optim.c"
  printf '#include "cli.h"\n#include "cli/cli.h"\n#include "moe/model/model.h"\n#include "moe/eval/eval.h"\n' >"$r/src/cli/train.c"
  : >"$r/src/cli/cli.h"
  printf '#include "cli/cli.h"\n' >"$r/src/main.c"
}

# expect_found NAME PATTERN: the planted tree fails and the output names PATTERN
expect_found() {
  if ! check_tree "$t" >"$tmp/out" 2>/dev/null && grep -q -- "$2" "$tmp/out"; then ok "$1"
  else bad "$1: $(head -3 "$tmp/out")"; fi
}

# --- the checker on planted trees --------------------------------------------
t="$tmp/tree"
plant "$t"
if check_tree "$t" >"$tmp/out" 2>"$tmp/err"; then ok planted_clean_tree_passes
else bad "planted_clean_tree_passes: $(head -3 "$tmp/out")"; fi

printf '#include "moe/model/model.h"\n' >>"$t/src/util/common.c"
expect_found planted_upward_include_found \
  'src/util/common.c:2: includes moe/model/model.h (model+moe, layer 3) from util (layer 0)'
plant "$t"

printf '#include "moe/eval/eval.h"\n' >>"$t/src/train/optim.c"
expect_found planted_sibling_include_found 'src/train/optim.c:3: includes moe/eval/eval.h (eval, layer 4) from train'
plant "$t"

printf '#include "cli/cli.h"\n' >>"$t/src/model/model.c"
expect_found planted_private_header_found "src/model/model.c:3: includes cli/cli.h (another folder's private header)"
plant "$t"

printf '#include "moe/train/train.h"\n' >>"$t/include/moe/model/model.h"
expect_found planted_public_header_found 'include/moe/model/model.h:2: includes moe/train/train.h (train, layer 4) from model+moe'
plant "$t"

: >"$t/include/moe/run/session.h"
expect_found planted_unlisted_header_found 'include/moe/run/session.h belongs to no layer'
plant "$t"
: >"$t/include/moe/loose.h"
expect_found planted_header_outside_folder_found 'include/moe/loose.h belongs to no layer'
plant "$t"

mkdir -p "$t/src/run"; printf '#include "moe/util/common.h"\n' >"$t/src/run/session.c"
expect_found planted_unlisted_folder_found 'src/run/ is in no layer'
plant "$t"

plant "$t" "src/util/common.c moe/model/model.h a reason"
printf '#include "moe/model/model.h"\n' >>"$t/src/util/common.c"
if check_tree "$t" >"$tmp/out" 2>/dev/null; then ok planted_exception_allows
else bad "planted_exception_allows: $(head -3 "$tmp/out")"; fi
printf '#include "moe/util/common.h"\n' >"$t/src/util/common.c"
expect_found planted_stale_exception_found 'exception "src/util/common.c moe/model/model.h" .* no longer occurs'

# --- the repository ----------------------------------------------------------
if check_tree . >"$tmp/out" 2>"$tmp/err"; then ok repository_layers_hold
else bad "repository_layers_hold:"; cat "$tmp/out"; fi
n=$(grep -o '^[0-9]*' "$tmp/err")
if [ "${n:-0}" -ge 200 ]; then ok "repository_includes_scanned ($n)"
else bad "repository_includes_scanned: only ${n:-0} includes (expected several hundred)"; fi

# --- the library's exported names -------------------------------------------
# unprefixed LIB: the global symbols LIB defines that do not start with moe_
unprefixed() { nm -g --defined-only "$1" | awk 'NF == 3 && $3 !~ /^moe_/ { print $3 }'; }
printf 'int moe_fine(void) { return 1; }\nint loose_name(void) { return 2; }\nstatic int hidden(void) { return 3; }\nint moe_uses(void) { return hidden(); }\n' >"$tmp/planted.c"
if cc -c "$tmp/planted.c" -o "$tmp/planted.o" && ar rcs "$tmp/planted.a" "$tmp/planted.o" &&
   [ "$(unprefixed "$tmp/planted.a")" = loose_name ]; then ok planted_unprefixed_export_found
else bad "planted_unprefixed_export_found: $(unprefixed "$tmp/planted.a" | head -3)"; fi
lib=${1:-build}/libmoe.a
if [ ! -f "$lib" ]; then bad "library_exports_prefixed: $lib is missing (build it first)"
elif [ -z "$(unprefixed "$lib")" ] && [ "$(nm -g --defined-only "$lib" | grep -c ' T moe_')" -ge 300 ]; then
  ok library_exports_prefixed
else bad "library_exports_prefixed: $(unprefixed "$lib" | head -5 | tr '\n' ' ')"; fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
