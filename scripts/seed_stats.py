"""seed_stats.py — the statistics that docs/RESULTS.md's tables share
(scripts/paper-results.py, scripts/scale-results.py): a metric's mean ±
sample standard deviation over seeds, differences paired by seed, and the
rule that calls a paired difference resolved. Not a script itself."""
import math
import statistics as st


def ms(vals):
    """'mean ± std (n=N)' of a list of values, '—' for none."""
    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:.4f} (n=1)"
    return f"{st.mean(vals):.4f} ± {st.stdev(vals):.4f} (n={len(vals)})"


def col(runs, key):
    """The values of key over the seeds of runs ({seed: metrics})."""
    return [m[key] for m in runs.values() if key in m]


def paired(a, b, key):
    """a − b over the seeds both have ({seed: metrics} each): the formatted
    'mean ± std (n=N)' and the differences, or ('—', None)."""
    d = [a[s][key] - b[s][key] for s in sorted(a) if s in b and key in a[s] and key in b[s]]
    if not d:
        return "—", None
    if len(d) == 1:
        return f"{d[0]:+.4f} (n=1)", d
    return f"{st.mean(d):+.4f} ± {st.stdev(d):.4f} (n={len(d)})", d


def verdict(d):
    """Whether a paired difference is resolved: its mean beyond 2 standard
    errors, with at least 3 seeds (2 are too few to estimate the noise)."""
    if not d or len(d) < 3:
        return "too few seeds"
    se = st.stdev(d) / math.sqrt(len(d))
    m = st.mean(d)
    if abs(m) <= 2 * se:
        return "within noise"
    return "lower" if m < 0 else "higher"
