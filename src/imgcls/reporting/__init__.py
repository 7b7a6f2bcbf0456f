"""Reports: terminal tables, figures (plots of the run's numbers, image grids), the self-contained HTML page
(`run_report`), and run comparison. Import the module you need: the package imports none of them, so that
printing a table of predictions does not import torch."""
