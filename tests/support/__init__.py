# A package: test modules and conftests import as tests.<folder>.<name>, so same-named modules never collide.
