/* PEFM dashboard: names for controls that Dash's DataTable draws with icons only (its pager
 * buttons), so that screen readers can announce them. Applied to every table as it renders, at
 * most once a frame (charts redraw many nodes at once). */
(function () {
    const PAGER = {
        "first-page": "first page",
        "previous-page": "previous page",
        "next-page": "next page",
        "last-page": "last page",
    };
    let scheduled = false;
    function name() {
        scheduled = false;
        document.querySelectorAll(".previous-next-container button:not([aria-label])").forEach(function (button) {
            const cls = Object.keys(PAGER).find(function (c) { return button.classList.contains(c); });
            if (cls) {
                button.setAttribute("aria-label", PAGER[cls]);
            }
        });
    }
    new MutationObserver(function () {
        if (!scheduled) {
            scheduled = true;
            window.requestAnimationFrame(name);
        }
    }).observe(document.documentElement, {childList: true, subtree: true});
})();
