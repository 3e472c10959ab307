"""Model versions: which are live in which role, and how a canary, a challenger or a
promoted version compares with the one it would replace.
"""
