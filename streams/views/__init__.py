"""What people look at: the self-contained HTML report and the worker's live page."""
