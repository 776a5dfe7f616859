"""Reading Result records back and showing them: one module per question.

    load.py      results.json files or run directories, merged (shards); the merged file written
    grid.py      rows = kernel_name, columns = stap_name, counts and seconds; reasons in words
    terminal.py  the grid and the non-pass lines on a rich console
    markdown.py  the same for a CI step summary, kept under a size limit
    html.py      one self-contained page: the grid, each cell's tests, logs; a run's report files
    junit.py     one testcase per record, classname = the cell
    diff.py      regressions, fixes, changes, appeared/vanished, identities of two runs
"""
