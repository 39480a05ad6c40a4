# `snakemake --report report.html` (after `snakemake all`) holds the summary tables and every plot, each
# with its caption (workflow/report/*.rst), under the categories below.
rule report:
    input:
        unpack(report_inputs),
        settings=settings("report"),
    output:
        summary_csv=update(report("results/summary.csv", caption="../report/summary_csv.rst", category="Tables")),
        summary_md=update(report("results/summary.md", caption="../report/summary_md.rst", category="Tables")),
        run_metrics=update(report("results/metrics.json", caption="../report/run_metrics.rst", category="Tables")),
        score_by_method=update(
            report("results/plots/score_by_method.png", caption="../report/score_by_method.rst", category="Plots")
        ),
        training_curves=update(
            report("results/plots/training_curves.png", caption="../report/training_curves.rst", category="Plots")
        ),
        score_vs_shots=update(
            report("results/plots/score_vs_shots.png", caption="../report/score_vs_shots.rst", category="Plots")
        ),
        score_vs_latency=update(
            report("results/plots/score_vs_latency.png", caption="../report/score_vs_latency.rst", category="Plots")
        ),
    log:
        "results/logs/report/report.log",
    localrule: True
    params:
        params_file=PARAMS_FILE,  # params.yaml, or this run's overrides (common.smk)
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic report --params {params.params_file} --log {log}"
