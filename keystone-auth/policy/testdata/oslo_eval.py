"""Evaluate policy scenarios with the real oslo.policy (Debian python3-oslo.policy).

Differential-test driver for keystone-auth/policy: reads a JSON list of scenarios on
stdin, writes a JSON list of results on stdout. Run with /usr/bin/python3.

Scenario: {"policy_file": "<file contents>" | null, "defaults": [...],
           "config": {"enforce_scope": b, "enforce_new_defaults": b,
                      "policy_default_rule": "default"},
           "cases": [{"rule": name, "target": {...}, "creds": {...}}],
           "parse": ["rule string", ...], "sample": bool,
           "literals": ["kind", ...], "formats": [["fmt", {target}], ...]}
Result:   {"results": ["true"|"false"|"exc:<Type>"], "parsed": [str(check)],
           "sample": "<generator text>", "literals": [...], "formats": [...]}
"""
import ast
import copy
import json
import logging
import os
import sys
import tempfile
import traceback
import warnings

from oslo_config import cfg
from oslo_policy import _parser
from oslo_policy import generator
from oslo_policy import policy

logging.disable(logging.CRITICAL)
warnings.simplefilter('ignore')


def make_default(d):
    dep = None
    if d.get('deprecated_rule'):
        r = d['deprecated_rule']
        dep = policy.DeprecatedRule(
            r['name'], r['check_str'],
            deprecated_reason=r.get('reason') or None,
            deprecated_since=r.get('since') or None)
    ops = [{'method': o['method'], 'path': o['path']}
           for o in d.get('operations') or []]
    kwargs = dict(
        deprecated_rule=dep,
        deprecated_for_removal=d.get('deprecated_for_removal', False),
        deprecated_reason=d.get('deprecated_reason') or None,
        deprecated_since=d.get('deprecated_since') or None,
        scope_types=d.get('scope_types') or None)
    if ops:
        return policy.DocumentedRuleDefault(
            d['name'], d['check_str'], d['description'], ops, **kwargs)
    return policy.RuleDefault(d['name'], d['check_str'],
                              description=d['description'], **kwargs)


def outcome(fn):
    try:
        r = fn()
    except Exception as e:  # noqa: any exception escaping enforce()
        if os.environ.get('POLICY_DIFF_TRACE'):
            traceback.print_exc()
        return 'exc:%s' % type(e).__name__
    if r is True:
        return 'true'
    if r is False:
        return 'false'
    return 'odd:%r' % (r,)


def run(sc, tmp, idx):
    out = {}
    conf = cfg.ConfigOpts()
    conf([], project='difftest%d' % idx)
    c = sc.get('config') or {}
    policy.opts._register(conf)
    conf.set_override('policy_default_rule', c.get('policy_default_rule', ''),
                      group='oslo_policy')
    path = os.path.join(tmp, 'policy%d.yaml' % idx)
    if sc.get('policy_file') is not None:
        with open(path, 'w') as f:
            f.write(sc['policy_file'])
    enf = policy.Enforcer(conf, policy_file=path)
    conf.set_override('enforce_scope', c.get('enforce_scope', False),
                      group='oslo_policy')
    conf.set_override('enforce_new_defaults',
                      c.get('enforce_new_defaults', False),
                      group='oslo_policy')
    conf.set_override('policy_dirs', [], group='oslo_policy')
    defaults = [make_default(d) for d in sc.get('defaults') or []]
    enf.register_defaults(defaults)
    res = []
    for case in sc.get('cases') or []:
        target = copy.deepcopy(case['target'])
        creds = copy.deepcopy(case['creds'])
        res.append(outcome(lambda: enf.enforce(case['rule'], target, creds)))
    out['results'] = res
    out['parsed'] = [str(_parser.parse_rule(s)) for s in sc.get('parse') or []]
    if sc.get('sample'):
        out['sample'] = ''.join(generator._sort_and_format_by_section(
            {'trustpool': defaults}))
    lits = []
    for k in sc.get('literals') or []:
        try:
            v = ast.literal_eval(k)
            lits.append('ok:' + str(v))
        except ValueError:
            lits.append('valueerror')
        except SyntaxError:
            lits.append('syntaxerror')
        except Exception as e:  # noqa
            lits.append('exc:%s' % type(e).__name__)
    out['literals'] = lits
    fmts = []
    for fmt, target in sc.get('formats') or []:
        try:
            fmts.append('ok:' + (fmt % target))
        except KeyError:
            fmts.append('keyerror')
        except Exception as e:  # noqa
            fmts.append('exc:%s' % type(e).__name__)
    out['formats'] = fmts
    return out


def main():
    scenarios = json.load(sys.stdin)
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(sc, tmp, i) for i, sc in enumerate(scenarios)]
    json.dump(results, sys.stdout)


if __name__ == '__main__':
    main()
