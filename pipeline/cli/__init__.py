"""The ``madpipe`` command line: a module per command that parses its arguments and calls the library.
May import: anything; nothing in the library imports it.
"""
