"""stapmatrix: does systemtap build S still work on kernel K?

Data flows one way through one module per stage:
matrix -> plan -> images -> modules -> guest -> results -> pytest reports.
See docs/architecture.md.
"""
