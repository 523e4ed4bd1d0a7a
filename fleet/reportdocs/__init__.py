"""Reports as people read them: the dashboard's reports page, the Department's XLSX, the CSV
of daily figures, ``central report`` and the monthly report kept at central. The figures
themselves come from ``fleet.reports``."""
