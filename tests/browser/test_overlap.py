"""The overlap helper (overlap.py) on pages written here: it finds nothing on
a plain page, and reports an element put over text, fixed or not; text that
its own scroll box hides is out of view, not covered."""
import pytest

from tests.browser.overlap import assert_no_text_covered, covered_text

PAGE = """<!doctype html><html><head><meta name="viewport" content="width=device-width, initial-scale=1">
<style>body { font: 16px/1.5 sans-serif; margin: 1rem; } pre { overflow-x: auto; width: 10rem; }</style></head>
<body><main><h1>Answers</h1>
<section id="a"><h2>Answer A</h2>""" + "".join(f"<p>Line {i} of answer A, some words.</p>" for i in range(30)) + """</section>
<section id="b"><h2>Answer B</h2>""" + "".join(f"<p>Line {i} of answer B, some words.</p>" for i in range(30)) + """</section>
<table><tr><td id="cell">a cell with text</td><td>another</td></tr></table>
<pre id="long">a line far longer than its box, scrolled inside it and not covered by anything at all</pre>
</main></body></html>"""


@pytest.fixture
def plain(browser):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.set_content(PAGE)
    yield page
    context.close()


def test_nothing_is_reported_on_a_plain_page(plain):
    result = assert_no_text_covered(plain)
    assert result["checked"] >= 60  # every paragraph was looked at


def test_a_fixed_bar_over_the_answers_is_reported(plain):
    plain.evaluate("""() => {
      const bar = document.createElement('div');
      bar.id = 'bar';
      bar.textContent = 'Submit';
      bar.style.cssText = 'position: fixed; left: 0; right: 0; bottom: 0; height: 40vh; background: #fff;';
      document.body.append(bar);
    }""")
    result = covered_text(plain, "#b")
    assert result["coveredCount"] > 0
    assert {c["pinned"] for c in result["covered"]} == {"div#bar"}
    assert all(c["root"] == "#b" and c["block"] == "end" for c in result["covered"])  # at the top it is clear
    with pytest.raises(AssertionError, match="text points covered"):
        assert_no_text_covered(plain)


def test_an_element_placed_over_a_table_cell_is_reported(plain):
    plain.evaluate("""() => {
      const badge = document.createElement('span');
      badge.className = 'badge new';
      const cell = document.querySelector('#cell').getBoundingClientRect();
      badge.style.cssText = `position: absolute; left: ${cell.left + scrollX}px; top: ${cell.top + scrollY}px;
                             width: ${cell.width}px; height: ${cell.height}px; background: red;`;
      document.body.append(badge);
    }""")
    result = covered_text(plain, "table")
    assert [c["text"] for c in result["covered"]] == ["a cell with text", "a cell with text"]  # top and bottom
    assert result["covered"][0]["by"] == "span.badge.new" and result["covered"][0]["pinned"] is None


def test_a_selector_that_matches_nothing_is_an_error(plain):
    with pytest.raises(AssertionError, match="no element matches"):
        assert_no_text_covered(plain, ["#a", "#nowhere"])
