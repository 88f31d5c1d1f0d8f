"""The core of an edit, independent of any one editor: requests and token positions, hook
factories, objectives, the one optimization loop, keys and the fold, covariance, templates, and
the low-rank edits that are applied and reverted. Core imports the model layer and nothing above
it (see docs/architecture.md)."""
