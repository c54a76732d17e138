"""fgd's experiments, one module each, installed as `fgd.experiments`.

Run one with `python -m fgd run NAME`; `python -m fgd list` lists them.
"""
