"""panconv-genomics: HyenaDNA and DiffPALM: single-nucleotide long-context DNA language models and paralog
pairing; FASTA/FASTQ/Stockholm readers."""
