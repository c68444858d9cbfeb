"""pytest plugin of panconv (entry point ``pytest11``); inactive unless a project opts in."""
