"""The console: pages for campaign admins and ML engineers."""
