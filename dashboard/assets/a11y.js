/* PEFM dashboard: names for controls that Dash's DataTable draws with icons only (its pager
 * buttons), so that screen readers can announce them. Applied to every table as it renders. */
(function () {
    const PAGER = {
        "first-page": "first page",
        "previous-page": "previous page",
        "next-page": "next page",
        "last-page": "last page",
    };
    function name() {
        Object.keys(PAGER).forEach(function (cls) {
            document.querySelectorAll("button." + cls + ":not([aria-label])").forEach(function (button) {
                button.setAttribute("aria-label", PAGER[cls]);
            });
        });
    }
    new MutationObserver(name).observe(document.documentElement, {childList: true, subtree: true});
})();
