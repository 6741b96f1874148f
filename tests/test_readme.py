"""The README and the documentation site's pages: the README opens with its commands and
fits on a page; links and tables work on GitHub and in the site alike."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_readme_fits_a_page_opens_with_its_commands_and_links_to_existing_files():
    """The README opens with `make demo` and `make test`, fits on a page, and every
    relative link in it and in the site's pages names a file of the repository (so it
    works on GitHub and in the site alike)."""
    import glob
    import re

    readme = open(os.path.join(ROOT, "README.md")).read()
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert readme.startswith("# uorojax\n\n```bash\n")
    assert [line.split("#")[0].strip() for line in block[:2]] == ["make demo", "make test"]
    assert len(readme.splitlines()) <= 150
    pages = [os.path.join(ROOT, "README.md")]
    pages += glob.glob(os.path.join(ROOT, "docs", "*.md"))
    pages += glob.glob(os.path.join(ROOT, "docs", "api", "*.md"))
    for page in pages:
        text = re.sub(r"```.*?```", "", open(page).read(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = os.path.join(os.path.dirname(page), target.split("#")[0])
            assert os.path.exists(path), (os.path.relpath(page, ROOT), target)


def test_every_table_row_of_the_readme_and_the_site_has_its_header_s_columns():
    """A `|` in a table cell, even inside code (`|Θ|`), ends the cell unless escaped
    (`\\|`): a row with more cells than its header loses the extra ones on GitHub and in
    the site."""
    import glob
    import re

    pages = [os.path.join(ROOT, "README.md")]
    pages += glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
    for page in (p for p in pages if "_build" not in p):
        header, fenced = None, False
        for number, line in enumerate(open(page).read().splitlines(), 1):
            fenced ^= line.startswith("```")
            if fenced or not line.startswith("|"):
                header = None
                continue
            cells = len(re.split(r"(?<!\\)\|", line.strip().strip("|")))
            header = header or cells
            assert cells == header, (os.path.relpath(page, ROOT), number, line[:80])
