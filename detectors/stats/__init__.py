"""Sequential-test building blocks: CUSUM banks, tests that latch, onset scans."""
