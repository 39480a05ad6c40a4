rule report:
    input:
        unpack(report_inputs),
    output:
        summary_csv="results/summary.csv",
        summary_md="results/summary.md",
        score_by_method="results/plots/score_by_method.png",
        training_curves="results/plots/training_curves.png",
        score_vs_shots="results/plots/score_vs_shots.png",
    params:
        run=config["run"],
        # the report recomputes every score under this variant (and checks metrics.json names it)
        metric_variant=config["eval"]["metric_variant"],
    log:
        "results/logs/report/report.log",
    benchmark:
        "results/benchmarks/report/report.tsv"
    localrule: True
    conda:
        "../envs/mimic.yaml"
    shell:
        "mimic report --params params.yaml --log {log}"
