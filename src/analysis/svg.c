/* svg.c — chart drawing for the report (see svg.h): axes with "nice" ticks,
 * legends, line charts, heatmaps and grouped bars as inline SVG text. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "analysis/svg.h"

static const char *PALETTE[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                                "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};

const char *moe_svg_color(size_t i) { return PALETTE[i % (sizeof PALETTE / sizeof PALETTE[0])]; }

int moe_svg_text(moe_buf *b, const char *s) {
    int rc = 0;
    for (; *s && !rc; s++) {
        switch (*s) {
        case '&': rc = moe_buf_append(b, "&amp;", 5); break;
        case '<': rc = moe_buf_append(b, "&lt;", 4); break;
        case '>': rc = moe_buf_append(b, "&gt;", 4); break;
        case '"': rc = moe_buf_append(b, "&quot;", 6); break;
        case '\'': rc = moe_buf_append(b, "&#39;", 5); break;
        default: rc = moe_buf_append(b, s, 1);
        }
    }
    return rc;
}

/* ---- axes ------------------------------------------------------------------ */

typedef struct frame {
    double W, H, left, right, top, bottom;   /* plot area in pixels */
    double x0, x1, y0, y1;                   /* data range (log10 for log axes) */
    int logx, logy;
} frame;

static double px(const frame *f, double x) {
    if (f->logx) x = log10(x);
    return f->left + (x - f->x0) / (f->x1 - f->x0) * (f->right - f->left);
}
static double py(const frame *f, double y) {
    if (f->logy) y = log10(y);
    return f->bottom - (y - f->y0) / (f->y1 - f->y0) * (f->bottom - f->top);
}

static double nice_step(double range, int target) {
    double raw = range / target, mag = pow(10.0, floor(log10(raw))), r = raw / mag;
    return (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
}

/* A tick label: compact %g, or 10^k for log axes. */
static void tick_label(moe_buf *b, double v, int log) {
    if (log) {
        if (fabs(v - round(v)) < 1e-9) { moe_buf_printf(b, "10<tspan dy=\"-5\" font-size=\"8\">%d</tspan>", (int)round(v)); return; }
        moe_buf_printf(b, "%.3g", pow(10.0, v));
        return;
    }
    if (fabs(v) < 1e-12) v = 0;
    if (fabs(v) >= 1e5 || (fabs(v) < 1e-3 && v != 0)) moe_buf_printf(b, "%.0e", v);
    else moe_buf_printf(b, "%.4g", v);
}

/* Widens a degenerate range and pads a little. */
static void pad_range(double *lo, double *hi, double pad) {
    if (!(*hi > *lo)) { double d = fabs(*lo) > 0 ? fabs(*lo) * 0.1 : 0.5; *lo -= d; *hi += d; return; }
    double d = (*hi - *lo) * pad;
    *lo -= d;
    *hi += d;
}

/* Width in pixels of the widest y tick label (about 6 px per character). */
static double ytick_width(const frame *f) {
    double w = 0;
    moe_buf t = {0};
    if (f->logy) return 30;
    double step = nice_step(f->y1 - f->y0, 5);
    for (double v = ceil(f->y0 / step) * step; v <= f->y1 + 1e-9 * step; v += step) {
        t.len = 0;
        tick_label(&t, v, 0);
        if (t.data) w = fmax(w, 6.0 * (double)t.len);
    }
    moe_buf_free(&t);
    return w;
}

static void axes(moe_buf *b, const frame *f, const char *xlabel, const char *ylabel, int x_ticks) {
    moe_buf_printf(b, "<g class=\"axes\">");
    /* y grid and ticks */
    if (f->logy) {
        double step = f->y1 - f->y0 > 8 ? ceil((f->y1 - f->y0) / 6) : 1;
        for (double v = ceil(f->y0); v <= f->y1 + 1e-9; v += step) {
            double y = f->bottom - (v - f->y0) / (f->y1 - f->y0) * (f->bottom - f->top);
            moe_buf_printf(b, "<line class=\"grid\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>"
                           "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">",
                           f->left, f->right, y, y, f->left - 5, y + 3.5);
            tick_label(b, v, 1);
            moe_buf_printf(b, "</text>");
        }
    } else {
        double step = nice_step(f->y1 - f->y0, 5);
        for (double v = ceil(f->y0 / step) * step; v <= f->y1 + 1e-9 * step; v += step) {
            double y = f->bottom - (v - f->y0) / (f->y1 - f->y0) * (f->bottom - f->top);
            moe_buf_printf(b, "<line class=\"grid\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>"
                           "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">",
                           f->left, f->right, y, y, f->left - 5, y + 3.5);
            tick_label(b, v, 0);
            moe_buf_printf(b, "</text>");
        }
    }
    /* x ticks (numeric axes only) */
    if (x_ticks) {
        if (f->logx) {
            for (double v = ceil(f->x0 / log10(2.0)); v * log10(2.0) <= f->x1 + 1e-9; v += 1) {
                double x = f->left + (v * log10(2.0) - f->x0) / (f->x1 - f->x0) * (f->right - f->left);
                moe_buf_printf(b, "<line class=\"tickmark\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>"
                               "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>",
                               x, x, f->bottom, f->bottom + 4, x, f->bottom + 15, pow(2.0, v));
            }
        } else {
            double step = nice_step(f->x1 - f->x0, 6);
            for (double v = ceil(f->x0 / step) * step; v <= f->x1 + 1e-9 * step; v += step) {
                double x = f->left + (v - f->x0) / (f->x1 - f->x0) * (f->right - f->left);
                moe_buf_printf(b, "<line class=\"tickmark\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>"
                               "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">",
                               x, x, f->bottom, f->bottom + 4, x, f->bottom + 15);
                tick_label(b, v, 0);
                moe_buf_printf(b, "</text>");
            }
        }
    }
    moe_buf_printf(b, "<line class=\"axis\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>"
                   "<line class=\"axis\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>",
                   f->left, f->right, f->bottom, f->bottom, f->left, f->left, f->top, f->bottom);
    moe_buf_printf(b, "<text class=\"label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">",
                   (f->left + f->right) / 2, f->H - 6);
    moe_svg_text(b, xlabel);
    moe_buf_printf(b, "</text><text class=\"label\" transform=\"translate(13,%.1f) rotate(-90)\" "
                   "text-anchor=\"middle\">", (f->top + f->bottom) / 2);
    moe_svg_text(b, ylabel);
    moe_buf_printf(b, "</text></g>");
}

/* Legend entries in rows under the title; returns the y below the legend. */
typedef struct { const char *name, *color; int kind; } legend_item;  /* kind 0 line, 1 dashed, 2 box */

static double legend(moe_buf *b, double W, double y, const legend_item *it, size_t n) {
    double x = 62;
    if (n == 0) return y;
    moe_buf_printf(b, "<g class=\"legend\">");
    for (size_t i = 0; i < n; i++) {
        double w = 24 + 6.3 * (double)strlen(it[i].name) + 14;
        if (x + w > W - 8 && x > 62) { x = 62; y += 15; }
        if (it[i].kind == 2)
            moe_buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"9\" fill=\"%s\"/>", x, y - 8, it[i].color);
        else
            moe_buf_printf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2.5\"%s/>",
                           x, x + 18, y - 4, y - 4, it[i].color, it[i].kind == 1 ? " stroke-dasharray=\"5 3\"" : "");
        moe_buf_printf(b, "<text class=\"legend-text\" x=\"%.1f\" y=\"%.1f\">", x + 22, y);
        moe_svg_text(b, it[i].name);
        moe_buf_printf(b, "</text>");
        x += w;
    }
    moe_buf_printf(b, "</g>");
    return y + 15;
}

static void open_chart(moe_buf *b, const char *id, const char *title, double W, double H) {
    moe_buf_printf(b, "<figure class=\"chart\" id=\"");
    moe_svg_text(b, id ? id : "chart");
    moe_buf_printf(b, "\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                   "viewBox=\"0 0 %.0f %.0f\" role=\"img\" aria-label=\"", W, H, W, H);
    moe_svg_text(b, title);
    moe_buf_printf(b, "\"><text class=\"title\" x=\"10\" y=\"17\">");
    moe_svg_text(b, title);
    moe_buf_printf(b, "</text>");
}

static int close_chart(moe_buf *b) { return moe_buf_printf(b, "</svg></figure>\n"); }

/* ---- line charts --------------------------------------------------------------- */

int moe_svg_line(moe_buf *b, const moe_svg_line_chart *c) {
    double W = c->width ? c->width : 560, H = c->height ? c->height : 270;
    frame f = {.W = W, .H = H, .left = 62, .right = W - 14, .logx = c->logx, .logy = c->logy};
    double xl = INFINITY, xh = -INFINITY, yl = INFINITY, yh = -INFINITY;
    for (size_t s = 0; s < c->n_series; s++)
        for (size_t i = 0; i < c->series[s].n; i++) {
            double x = c->series[s].x[i], y = c->series[s].y[i];
            if (!isfinite(x) || !isfinite(y) || (c->logy && y <= 0) || (c->logx && x <= 0)) continue;
            if (c->logx) x = log10(x);
            if (c->logy) y = log10(y);
            xl = fmin(xl, x); xh = fmax(xh, x); yl = fmin(yl, y); yh = fmax(yh, y);
        }
    for (size_t i = 0; i < c->n_hlines; i++) {
        double y = c->logy ? log10(c->hlines[i].y) : c->hlines[i].y;
        if (isfinite(y)) { yl = fmin(yl, y); yh = fmax(yh, y); }
    }
    if (!isfinite(xl)) { xl = 0; xh = 1; yl = 0; yh = 1; }
    if (!isnan(c->ymin)) yl = c->logy ? log10(c->ymin) : c->ymin;
    if (!isnan(c->ymax)) yh = c->logy ? log10(c->ymax) : c->ymax;
    if (!(xh > xl)) { xl -= 0.5; xh += 0.5; }
    double pyl = yl, pyh = yh;
    pad_range(&pyl, &pyh, 0.05);
    if (!isnan(c->ymin)) pyl = yl;
    if (!isnan(c->ymax)) pyh = yh;
    f.x0 = xl; f.x1 = xh; f.y0 = pyl; f.y1 = pyh;
    f.left = fmax(50, 30 + ytick_width(&f));

    open_chart(b, c->id, c->title, W, H);
    legend_item items[64];
    size_t ni = 0;
    for (size_t s = 0; s < c->n_series && ni < 64; s++)
        if (c->series[s].name) items[ni++] = (legend_item){c->series[s].name, c->series[s].color, c->series[s].dashed};
    for (size_t i = 0; i < c->n_hlines && ni < 64; i++)
        if (c->hlines[i].label) items[ni++] = (legend_item){c->hlines[i].label, c->hlines[i].color, 1};
    for (size_t i = 0; i < c->n_bands && ni < 64; i++)
        if (c->bands[i].label) items[ni++] = (legend_item){c->bands[i].label, c->bands[i].fill, 2};
    f.top = legend(b, W, 33, items, ni) + 2;
    f.bottom = H - 42;

    /* bands under everything */
    moe_buf_printf(b, "<g class=\"bands\">");
    for (size_t i = 0; i < c->n_bands; i++) {
        double x0 = fmax(px(&f, c->bands[i].x0), f.left), x1 = fmin(px(&f, c->bands[i].x1), f.right);
        if (x1 > x0)
            moe_buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>",
                           x0, f.top, x1 - x0, f.bottom - f.top, c->bands[i].fill);
    }
    moe_buf_printf(b, "</g>");
    axes(b, &f, c->xlabel, c->ylabel, 1);
    moe_buf_printf(b, "<g class=\"marks\">");
    for (size_t i = 0; i < c->n_hlines; i++) {
        double y = py(&f, c->hlines[i].y);
        if (y >= f.top && y <= f.bottom)
            moe_buf_printf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                           "stroke-width=\"1.3\" stroke-dasharray=\"5 3\"/>", f.left, f.right, y, y, c->hlines[i].color);
    }
    for (size_t s = 0; s < c->n_series; s++) {
        const moe_svg_series *se = &c->series[s];
        moe_buf_printf(b, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"%.1f\" stroke-linejoin=\"round\"%s d=\"",
                       se->color, se->width > 0 ? se->width : 1.6, se->dashed ? " stroke-dasharray=\"5 3\"" : "");
        int pen = 0;
        /* long series: at most ~1200 points (every k-th) */
        size_t k = se->n > 1200 ? (se->n + 1199) / 1200 : 1;
        for (size_t i = 0; i < se->n; i++) {
            double x = se->x[i], y = se->y[i];
            if (!isfinite(x) || !isfinite(y) || (c->logy && y <= 0) || (c->logx && x <= 0)) { pen = 0; continue; }
            if (k > 1 && i % k && i + 1 != se->n) continue;
            double X = px(&f, x), Y = fmin(fmax(py(&f, y), f.top), f.bottom);
            moe_buf_printf(b, "%s%.1f %.1f", pen ? " L" : "M", X, Y);
            pen = 1;
        }
        moe_buf_printf(b, "\"/>");
        if (se->dots)
            for (size_t i = 0; i < se->n; i++) {
                double x = se->x[i], y = se->y[i];
                if (!isfinite(x) || !isfinite(y) || (c->logy && y <= 0) || (c->logx && x <= 0)) continue;
                moe_buf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.6\" fill=\"%s\"/>", px(&f, x),
                               fmin(fmax(py(&f, y), f.top), f.bottom), se->color);
            }
    }
    moe_buf_printf(b, "</g>");
    /* band labels on top */
    for (size_t i = 0; i < c->n_bands; i++) {
        double x0 = fmax(px(&f, c->bands[i].x0), f.left), x1 = fmin(px(&f, c->bands[i].x1), f.right);
        if (x1 - x0 > 14 && c->bands[i].label) {
            char roman[8] = "";
            sscanf(c->bands[i].label, "stage %7s", roman);
            moe_buf_printf(b, "<text class=\"band-label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>",
                           (x0 + x1) / 2, f.top + 12, roman);
        }
    }
    return close_chart(b);
}

/* ---- heatmaps ------------------------------------------------------------------ */

void moe_svg_heat_color(double t, char *out) {
    static const double stops[][3] = {{247, 251, 255}, {107, 174, 214}, {8, 48, 107}};
    if (!(t >= 0)) t = 0;
    if (t > 1) t = 1;
    int i = t < 0.5 ? 0 : 1;
    double u = t < 0.5 ? t / 0.5 : (t - 0.5) / 0.5;
    sprintf(out, "#%02x%02x%02x", (int)(stops[i][0] + u * (stops[i + 1][0] - stops[i][0])),
            (int)(stops[i][1] + u * (stops[i + 1][1] - stops[i][1])),
            (int)(stops[i][2] + u * (stops[i + 1][2] - stops[i][2])));
}

int moe_svg_heat(moe_buf *b, const moe_svg_heatmap *h) {
    double W = h->width ? h->width : 560, left = 70, right = W - 14, top = 56;
    double ch = h->rows > 40 ? 5 : h->rows > 20 ? 8 : 16, cw = (right - left) / (double)(h->cols ? h->cols : 1);
    double bottom = top + ch * (double)h->rows, H = bottom + 44;
    open_chart(b, h->id, h->title, W, H);
    /* the colour scale as the legend (data-lo / data-hi: the scale, for comparing charts) */
    int any_nan = 0;
    for (size_t i = 0; i < h->rows * h->cols; i++) any_nan |= !isfinite(h->values[i]);
    moe_buf_printf(b, "<g class=\"legend\" data-lo=\"%.6g\" data-hi=\"%.6g\">", h->lo, h->hi);
    for (int i = 0; i < 40; i++) {
        char col[8];
        moe_svg_heat_color(i / 39.0, col);
        moe_buf_printf(b, "<rect x=\"%.1f\" y=\"26\" width=\"4.2\" height=\"10\" fill=\"%s\"/>", left + 4.0 * i, col);
    }
    moe_buf_printf(b, "<text class=\"legend-text\" x=\"%.1f\" y=\"46\" text-anchor=\"middle\">%.3g</text>"
                   "<text class=\"legend-text\" x=\"%.1f\" y=\"46\" text-anchor=\"middle\">%.3g</text>"
                   "<text class=\"legend-text\" x=\"%.1f\" y=\"35\">", left, h->lo, left + 160, h->hi, left + 172);
    moe_svg_text(b, h->scale_label ? h->scale_label : "");
    moe_buf_printf(b, "</text>");
    if (any_nan)
        moe_buf_printf(b, "<rect x=\"%.1f\" y=\"38\" width=\"10\" height=\"9\" fill=\"%s\"/>"
                       "<text class=\"legend-text\" x=\"%.1f\" y=\"46\">no data</text>",
                       left + 200, MOE_SVG_NO_DATA, left + 214);
    moe_buf_printf(b, "</g><g class=\"marks\">");
    double span = h->hi > h->lo ? h->hi - h->lo : 1;
    for (size_t r = 0; r < h->rows; r++)
        for (size_t c = 0; c < h->cols; c++) {
            double v = h->values[r * h->cols + c];
            char col[8];
            if (isfinite(v)) moe_svg_heat_color((v - h->lo) / span, col);
            else snprintf(col, sizeof col, "%s", MOE_SVG_NO_DATA);
            moe_buf_printf(b, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"><title>",
                           left + cw * (double)c, top + ch * (double)r, cw + 0.05, ch + 0.05, col);
            if (h->row_labels) moe_svg_text(b, h->row_labels[r]);
            moe_buf_printf(b, ", ");
            if (h->col_labels) moe_svg_text(b, h->col_labels[c]); else moe_buf_printf(b, "%zu", c);
            if (isfinite(v)) moe_buf_printf(b, ": %.4g</title></rect>", v);
            else moe_buf_printf(b, ": no data</title></rect>");
        }
    moe_buf_printf(b, "</g><g class=\"axes\">");
    size_t every = h->rows > 40 ? 8 : h->rows > 20 ? 2 : 1;
    for (size_t r = 0; r < h->rows; r++) {
        if (h->row_group > 1 && r % h->row_group == 0 && r)
            moe_buf_printf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#fff\" stroke-width=\"2\"/>",
                           left, right, top + ch * (double)r, top + ch * (double)r);
        if (h->row_group > 1 && h->group_labels) {
            if (r % h->row_group) continue;
            moe_buf_printf(b, "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">", left - 5,
                           top + ch * ((double)r + (double)h->row_group / 2) + 3.5);
            moe_svg_text(b, h->group_labels[r / h->row_group]);
            moe_buf_printf(b, "</text>");
        } else if (h->row_labels && r % every == 0) {
            moe_buf_printf(b, "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">", left - 5,
                           top + ch * (double)r + ch / 2 + 3.5);
            moe_svg_text(b, h->row_labels[r]);
            moe_buf_printf(b, "</text>");
        }
    }
    if (h->x1 > h->x0 && h->cols) {  /* numeric: ticks at round values */
        double step = nice_step(h->x1 - h->x0, 6);
        if (step < 1 && h->x1 - h->x0 >= 1) step = 1;
        for (double v = ceil(h->x0 / step) * step; v <= h->x1 + 1e-9 * step; v += step) {
            double x = left + (v - h->x0) / (h->x1 - h->x0) * (right - left);
            moe_buf_printf(b, "<line class=\"tickmark\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>"
                           "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", x, x, bottom,
                           bottom + 4, x, bottom + 14);
            tick_label(b, v, 0);
            moe_buf_printf(b, "</text>");
        }
    }
    size_t cstep = h->cols > 12 ? (h->cols + 7) / 8 : 1;
    for (size_t c = 0; c < h->cols && !(h->x1 > h->x0); c += cstep) {
        double x = left + cw * ((double)c + 0.5);
        moe_buf_printf(b, "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", x, bottom + 14);
        if (h->col_labels) moe_svg_text(b, h->col_labels[c]); else moe_buf_printf(b, "%zu", c);
        moe_buf_printf(b, "</text>");
    }
    moe_buf_printf(b, "<text class=\"label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", (left + right) / 2, H - 6);
    moe_svg_text(b, h->xlabel);
    moe_buf_printf(b, "</text><text class=\"label\" transform=\"translate(13,%.1f) rotate(-90)\" "
                   "text-anchor=\"middle\">", (top + bottom) / 2);
    moe_svg_text(b, h->ylabel);
    moe_buf_printf(b, "</text></g>");
    return close_chart(b);
}

/* ---- grouped bars ----------------------------------------------------------------- */

int moe_svg_bars(moe_buf *b, const moe_svg_bar_chart *c) {
    double W = c->width ? c->width : 560, H = c->height ? c->height : 250;
    frame f = {.W = W, .H = H, .left = 62, .right = W - 14, .x0 = 0, .x1 = 1};
    double yh = 0;
    for (size_t i = 0; i < c->groups * c->n_series; i++) if (isfinite(c->values[i])) yh = fmax(yh, c->values[i]);
    for (size_t i = 0; i < c->n_hlines; i++) yh = fmax(yh, c->hlines[i].y);
    if (!(yh > 0)) yh = 1;
    f.y0 = 0;
    f.y1 = yh * 1.08;
    f.left = fmax(50, 30 + ytick_width(&f));
    open_chart(b, c->id, c->title, W, H);
    legend_item items[64];
    size_t ni = 0;
    for (size_t s = 0; s < c->n_series && ni < 64; s++) items[ni++] = (legend_item){c->series_names[s], moe_svg_color(s), 2};
    for (size_t i = 0; i < c->n_hlines && ni < 64; i++)
        if (c->hlines[i].label) items[ni++] = (legend_item){c->hlines[i].label, c->hlines[i].color, 1};
    f.top = legend(b, W, 33, items, ni) + 2;
    f.bottom = H - 42;
    axes(b, &f, c->xlabel, c->ylabel, 0);
    double gw = (f.right - f.left) / (double)(c->groups ? c->groups : 1);
    double bw = gw * 0.8 / (double)(c->n_series ? c->n_series : 1);
    moe_buf_printf(b, "<g class=\"marks\">");
    for (size_t g = 0; g < c->groups; g++)
        for (size_t s = 0; s < c->n_series; s++) {
            double v = c->values[s * c->groups + g];
            if (!isfinite(v)) continue;
            double x = f.left + gw * (double)g + gw * 0.1 + bw * (double)s, y = py(&f, v);
            moe_buf_printf(b, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"><title>",
                           x, y, bw * 0.92, f.bottom - y, moe_svg_color(s));
            moe_svg_text(b, c->series_names[s]);
            moe_buf_printf(b, ", ");
            moe_svg_text(b, c->group_labels[g]);
            moe_buf_printf(b, ": %.4g</title></rect>", v);
        }
    for (size_t i = 0; i < c->n_hlines; i++) {
        double y = py(&f, c->hlines[i].y);
        moe_buf_printf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"1.3\" "
                       "stroke-dasharray=\"5 3\"/>", f.left, f.right, y, y, c->hlines[i].color);
    }
    moe_buf_printf(b, "</g><g class=\"axes\">");
    size_t step = c->groups > 24 ? (c->groups + 11) / 12 : 1;
    for (size_t g = 0; g < c->groups; g += step) {
        moe_buf_printf(b, "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">",
                       f.left + gw * ((double)g + 0.5), f.bottom + 14);
        moe_svg_text(b, c->group_labels[g]);
        moe_buf_printf(b, "</text>");
    }
    moe_buf_printf(b, "</g>");
    return close_chart(b);
}
