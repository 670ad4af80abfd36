"""Results -> tables: every result file of a sweep as one CSV row (:mod:`~d4c.tables.collect`), and Markdown
tables in the paper's layout (:mod:`~d4c.tables.layouts`, rendered by :mod:`~d4c.tables.render`), by
``d4c-results`` (:mod:`~d4c.tables.cli`)."""
