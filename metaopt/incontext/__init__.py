"""Around a frozen in-context model: which of a task's pool of labelled examples it sees for each query."""
