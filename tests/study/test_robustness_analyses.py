"""The per_class, per_example and audit study plug-ins, fed as the runner feeds them."""

import pandas as pd
import torch

from robustlens.attacks import PGD, eval_mode
from robustlens.study.analyses import ANALYSES, AnalysisBatch, CleanBatch


def _trained_digits():
    import robustlens
    from robustlens.data import load_digits
    from robustlens.training import TrainConfig, train_model

    torch.manual_seed(0)
    model = robustlens.create_model("digits_cnn")
    train_model(model, load_digits("train"), TrainConfig(epochs=10, batch_size=64, lr=5e-3))
    return model.eval()


def _feed(analyses, model, data, attacks):
    with eval_mode(model):
        for i, (x, y) in enumerate(data.batches(100)):
            with torch.no_grad():
                logits = model(x)
            clean = CleanBatch(x, y, logits, {}, index=i, offset=100 * i)
            for a in analyses:
                a.update_clean(clean)
            for name, attack in attacks:
                x_adv = attack(model, x, y)
                with torch.no_grad():
                    adv_logits = model(x_adv)
                for a in analyses:
                    a.update(AnalysisBatch(name, attack.eps, clean, x_adv, adv_logits, {}))


def test_per_class_per_example_and_audit_tables():
    from robustlens.data import load_digits

    model = _trained_digits()
    data = load_digits("test").subset(torch.arange(300))
    names = data.class_names
    analyses = [ANALYSES[n]("m", model, names, **opts) for n, opts in
                [("per_class", {}), ("per_example", {}),
                 ("audit", {"n_images": 100, "steps": 10, "restarts": 3})]]
    attacks = [("pgd", PGD(0.05, steps=5)), ("pgd", PGD(0.1, steps=5)),
               ("fgsm", PGD(0.1, steps=1, step_size=0.1, random_start=False))]
    _feed(analyses, model, data, attacks)
    per_class = analyses[0].tables()["per_class"]
    tables = analyses[1].tables()
    per_example, worst = tables["per_example"], tables["worst_case"]
    for (attack, eps), g in per_class.groupby(["attack", "eps"]):
        overall = g.n_correct.sum() / g.n_images.sum()
        if attack == "clean":
            continue
        rows = per_example[(per_example.attack == attack) & (per_example.eps == eps)]
        assert overall == rows.correct.mean() and len(rows) == 300
    assert sorted(per_example.example.unique()) == list(range(300))
    w = worst[worst.eps == 0.1]
    both = per_example[per_example.eps == 0.1].groupby("example").correct.all()
    assert (w.set_index("example").correct == both).all()
    audit = analyses[2].tables()["audit"]
    assert set(audit.status) <= {"pass", "flag", "skipped"}
    assert (audit.eps.iloc[0] == 0.1) and len(audit) >= 10
    # state round trip
    for a in analyses[:2]:
        b = type(a)("m", model, names)
        b.load_state_dict(a.state_dict())
        for k, v in a.tables().items():
            pd.testing.assert_frame_equal(v, b.tables()[k])


def test_linf_and_l2_at_the_same_eps_stay_separate_in_study_tables():
    from robustlens.data import load_digits
    from robustlens.evaluation import evaluate_robustness

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    data = load_digits("test").subset(torch.arange(60))
    attacks = {"pgd_inf": PGD(0.1, steps=2, random_start=False),
               "pgd_l2": PGD(0.1, steps=2, norm="2", random_start=False)}
    analyses = [ANALYSES[n]("m", model, data.class_names) for n in ("per_class", "per_example")]
    for i, (x, y) in enumerate(data.batches(25)):
        with torch.no_grad():
            clean = CleanBatch(x, y, model(x), {}, index=i, offset=25 * i)
        for a in analyses:
            a.update_clean(clean)
        for name, attack in attacks.items():
            x_adv = attack.run(model, x, y, early_stop=True).adversarial
            with torch.no_grad():
                logits = model(x_adv)
            for a in analyses:
                a.update(AnalysisBatch(name, attack.eps, clean, x_adv, logits, {}, attack.norm))
    per_class = analyses[0].tables()["per_class"]
    tables = analyses[1].tables()
    per_example, worst = tables["per_example"], tables["worst_case"]
    assert set(zip(per_class.attack, per_class.norm, strict=True)) == {
        ("clean", ""), ("pgd_inf", "inf"), ("pgd_l2", "2")}
    assert set(zip(per_example.attack, per_example.norm, strict=True)) == {("pgd_inf", "inf"), ("pgd_l2", "2")}
    assert len(worst) == 2 * 60 and (worst.n_attacks == 1).all()
    # the same numbers as the library's engine on the same data (deterministic attacks)
    lib = evaluate_robustness(model, data, attacks, batch_size=25)
    cols = ["example", "label", "attack", "eps", "norm", "prediction", "correct", "top5_correct"]
    def ordered(df):
        return df[cols].sort_values(["attack", "example"], kind="stable").reset_index(drop=True)

    pd.testing.assert_frame_equal(ordered(per_example), ordered(lib.per_example), check_dtype=False)
    pd.testing.assert_frame_equal(worst.reset_index(drop=True), lib.worst_case().reset_index(drop=True),
                                  check_dtype=False)
    lib_pc = lib.per_class.drop(columns=["class_name"])
    mine_pc = per_class.drop(columns=["class_name"])
    pd.testing.assert_frame_equal(mine_pc.reset_index(drop=True), lib_pc.reset_index(drop=True),
                                  check_dtype=False)
    for a in analyses:  # state round trip keeps the norms
        b = type(a)("m", model, data.class_names)
        b.load_state_dict(a.state_dict())
        for k, v in a.tables().items():
            pd.testing.assert_frame_equal(v, b.tables()[k])
