"""Reports: terminal tables now; plots and the HTML report build on these."""
