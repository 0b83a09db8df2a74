/* PEFM dashboard: a redrawn chart keeps the user's zoom.
 * keepView(figure, graphId): when the chart on the page shows the same uirevision as the new
 * figure (the same view: a refresh), every axis the user zoomed or panned (autorange off) keeps
 * its range. Every redrawn chart uses it (dashboard/components/zoom.py). Plotly's own uirevision does not survive dcc.Graph's re-plots here, so the view is
 * carried over explicitly. */
window.dash_clientside = Object.assign({}, window.dash_clientside, {
    pefm: {
        keepView: function (figure, graphId) {
            const shown = document.querySelector("#" + graphId + " .js-plotly-plot");
            if (!figure || !figure.layout || !shown || !shown.layout) {
                return figure;
            }
            if (shown.layout.uirevision !== figure.layout.uirevision) {
                return figure;
            }
            const layout = Object.assign({}, figure.layout);
            Object.keys(shown.layout).forEach(function (key) {
                const axis = shown.layout[key];
                if (/^[xy]axis\d*$/.test(key) && axis && axis.autorange === false && axis.range) {
                    layout[key] = Object.assign({}, layout[key], {range: axis.range.slice(), autorange: false});
                }
            });
            return Object.assign({}, figure, {layout: layout});
        },
    },
});
