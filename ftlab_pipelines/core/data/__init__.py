"""Raw data in, checked and split: sources, file checks, data contracts (GX), splits, inbox, new_lab."""
