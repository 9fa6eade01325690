/* svg.h — the charts of the report, drawn as inline SVG text: line charts
 * (optionally log-scale, with shaded bands and reference lines), heatmaps
 * and grouped bars. Each chart has a title, axis labels with units and a
 * legend; data marks live in <g class="marks"> (the browser test counts them). */
#ifndef MOE_SVG_H
#define MOE_SVG_H

#include <stddef.h>

#include "moe/util/common.h"

/* Colours for runs / series, cycling. */
const char *moe_svg_color(size_t i);

typedef struct moe_svg_series {
    const char *name;       /* legend label */
    const char *color;
    const double *x, *y;    /* [n]; NaN y values break the line */
    size_t n;
    int dashed;             /* 1: dashed line */
    int dots;               /* 1: also a dot at each point */
    double width;           /* stroke width (0: 1.6) */
} moe_svg_series;

typedef struct moe_svg_band {   /* a shaded x range with a label (e.g. a training stage) */
    double x0, x1;
    const char *label, *fill;
} moe_svg_band;

typedef struct moe_svg_hline {  /* a horizontal reference line */
    double y;
    const char *label, *color;
} moe_svg_hline;

typedef struct moe_svg_line_chart {
    const char *id, *title, *xlabel, *ylabel;
    int logx, logy;           /* base-10 log axes (log2 labels for logx) */
    double ymin, ymax;        /* NAN: from the data */
    const moe_svg_series *series;
    size_t n_series;
    const moe_svg_band *bands;
    size_t n_bands;
    const moe_svg_hline *hlines;
    size_t n_hlines;
    int width, height;        /* 0: 560 x 270 */
} moe_svg_line_chart;

int moe_svg_line(moe_buf *b, const moe_svg_line_chart *c);

/* A heatmap of values[rows*cols] (NaN: a grey "no data" cell, with a legend
 * entry), colour from lo to hi (several heatmaps given the same lo and hi
 * share one scale; the legend carries data-lo / data-hi). Row labels on the
 * left; every row_group rows a white separator line. The x axis is labelled
 * with col_labels (may be NULL: col index) every few columns, or, when
 * x1 > x0, numerically at round values: the columns then cover [x0, x1]
 * evenly (column c holds x0 + (c + 0.5) (x1 - x0) / cols). */
typedef struct moe_svg_heatmap {
    const char *id, *title, *xlabel, *ylabel, *scale_label;
    size_t rows, cols;
    const double *values;
    const char *const *row_labels;
    const char *const *col_labels;
    size_t row_group;
    const char *const *group_labels;  /* [rows/row_group] shown instead of row labels (may be NULL) */
    double lo, hi;
    double x0, x1;            /* numeric x axis (see above); x1 <= x0: labels */
    int width;                /* 0: 560 */
} moe_svg_heatmap;

int moe_svg_heat(moe_buf *b, const moe_svg_heatmap *h);
/* The heatmaps' colour at t in [0, 1] (light to dark blue), "#rrggbb" into out[8],
 * and the colour of a cell without a value. */
void moe_svg_heat_color(double t, char *out);
#define MOE_SVG_NO_DATA "#d5d9e0"

/* Grouped bars: groups (x categories) x series (legend), values[series*groups]. */
typedef struct moe_svg_bar_chart {
    const char *id, *title, *xlabel, *ylabel;
    size_t groups, n_series;
    const char *const *group_labels;
    const char *const *series_names;
    const double *values;
    const moe_svg_hline *hlines;
    size_t n_hlines;
    int width, height;        /* 0: 560 x 250 */
} moe_svg_bar_chart;

int moe_svg_bars(moe_buf *b, const moe_svg_bar_chart *c);

/* Appends s as HTML / XML text (escaping & < > " '). */
int moe_svg_text(moe_buf *b, const char *s);

#endif
