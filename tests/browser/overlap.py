"""Is any element drawn over another element's text? For the page open in
Playwright: every visible text node under `root` is scrolled so that its
element sits at the top of the viewport, then at the bottom, and at the
middle of each of its line boxes the topmost element (elementFromPoint) must
be the text's own element or inside it. A sticky or fixed bar over the
answers, a badge positioned over a table cell, a chart's overlay over its
legend: each is the topmost element at some line of text.

What it does not see, on purpose: a point that an ancestor's own scrolling
or clipping hides (a long line in a <pre> that scrolls, a row below a
panel's scroll) is out of view, not covered, and is left out; so is text
that is not rendered (display: none, visibility: hidden). Elements with
`pointer-events: none` are invisible to elementFromPoint, so a bar with it
would go unseen (none of the project's pages use it).

The count of checked points comes back so that a check that looked at
nothing cannot pass (`assert_no_text_covered` asserts it is above zero).
tests/browser/test_every_page.py runs it on every page at two widths;
test_overlap.py shows it reports an element put over text."""

COVERED_TEXT = """({ roots, limit }) => {
  const covered = [];
  let checked = 0;
  const before = [scrollX, scrollY];
  // A point outside the box of the element itself or of an ancestor that
  // clips (overflow other than visible) is scrolled or clipped out of view.
  const clipped = (el, x, y) => {
    for (let a = el; a && a !== document.documentElement; a = a.parentElement) {
      const s = getComputedStyle(a);
      if (s.overflowX === 'visible' && s.overflowY === 'visible') continue;
      const r = a.getBoundingClientRect();
      if (x < r.left || x > r.right || y < r.top || y > r.bottom) return true;
    }
    return false;
  };
  const describe = (el) => el ? el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    (typeof el.className === 'string' && el.className.trim() ? '.' + el.className.trim().split(/\\s+/).join('.') : '') : null;
  // The fixed or sticky element the covering one is part of, if any.
  const pinned = (el) => {
    for (let a = el; a; a = a.parentElement) {
      if (['fixed', 'sticky'].includes(getComputedStyle(a).position)) return describe(a);
    }
    return null;
  };
  const check = (root, node) => {
    const el = node.parentElement;
    if (!el || !el.checkVisibility({ visibilityProperty: true })) return;
    if (el.closest('script, style, template, noscript, option, textarea, title')) return;
    const range = document.createRange();
    range.selectNodeContents(node);
    for (const block of ['start', 'end']) {
      el.scrollIntoView({ block, inline: 'nearest' });
      for (const r of range.getClientRects()) {
        if (r.width < 1 || r.height < 1) continue;
        const x = r.left + r.width / 2, y = r.top + r.height / 2;
        if (x < 0 || y < 0 || x >= innerWidth || y >= innerHeight || clipped(el, x, y)) continue;
        checked += 1;
        const top = document.elementFromPoint(x, y);
        if (!(top && (top === el || el.contains(top)))) {
          covered.push({ root, block, text: node.textContent.trim().slice(0, 40), in: describe(el),
                         by: describe(top), pinned: top && pinned(top) });
        }
      }
    }
  };
  const missing = roots.filter((root) => !document.querySelector(root));
  for (const root of roots) {
    const start = document.querySelector(root);
    if (!start) continue;
    const walker = document.createTreeWalker(start, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (node.textContent.trim()) check(root, node);
    }
  }
  scrollTo(before[0], before[1]);
  return { checked, covered: covered.slice(0, limit), coveredCount: covered.length, missing };
}"""


def covered_text(page, roots: str | list[str] = "body", *, limit: int = 10) -> dict:
    """The text under `roots` (one CSS selector or several) checked:
    {checked: points looked at, coveredCount, covered: the first `limit` as
    {root, block, text, in, by, pinned}, missing: selectors that matched
    nothing}. `by` is the element on top of the text (tag#id.classes), `in`
    the text's own element, `pinned` the fixed or sticky element `by` is
    part of (null: none)."""
    roots = [roots] if isinstance(roots, str) else list(roots)
    return page.evaluate(COVERED_TEXT, {"roots": roots, "limit": limit})


def assert_no_text_covered(page, roots: str | list[str] = "body") -> dict:
    result = covered_text(page, roots)
    assert result["missing"] == [], f"no element matches {result['missing']}"
    assert result["checked"] > 0, f"no text point under {roots!r} was checked"
    assert result["coveredCount"] == 0, (
        f"{result['coveredCount']} of {result['checked']} text points covered: {result['covered']}"
    )
    return result
