"""The head atlas (`dg-heads atlas`): every (block, head) of a CLIP image tower on one page.

`decomposition` (TextSpan's direct terms), `measures` (class relevance, domain specificity, the
method's own view), `textspan` (a head's words), `page` (HTML, PNG, CSV, JSON), `cli`.
"""
