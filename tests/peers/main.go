// Command peers asks a live `ripcord run` for its rollout gate the way Argo
// Rollouts and Flagger do, with their own code (pinned in go.mod):
//
//   - Argo Rollouts: the shipped AnalysisTemplate (deploy/argo/ripcord-gate.yaml)
//     is read into the controller's own types, its {{args.*}} resolved as the
//     analysis controller does (the metric as JSON through
//     utils/template.ResolveQuotedArgs), and measured by the real `web`
//     provider (metricproviders/webmetric, which judges the answer with
//     utils/evaluate's successCondition / failureCondition).
//   - Flagger: the shipped Canary (deploy/flagger/canary-example.yaml) is read
//     into Flagger's own types and every webhook is called with
//     pkg/controller.CallWebhook, the caller Flagger's scheduler uses
//     (scheduler_hooks.go: a confirm-* hook passes when it returns no error;
//     a rollback hook rolls the canary back when it returns no error).
//
// The webhooks' cluster-internal host is replaced by -ripcord; nothing else
// in the shipped files is changed. One JSON object per line on stdout.
//
//	peers -ripcord http://127.0.0.1:9464 -service payments \
//	    -argo deploy/argo/ripcord-gate.yaml -flagger deploy/flagger/canary-example.yaml
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"

	"github.com/argoproj/argo-rollouts/metricproviders/webmetric"
	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	templateutil "github.com/argoproj/argo-rollouts/utils/template"
	flaggerv1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	"github.com/fluxcd/flagger/pkg/controller"
	log "github.com/sirupsen/logrus"
	"sigs.k8s.io/yaml"
)

func main() {
	ripcord := flag.String("ripcord", "", "ripcord's base URL, e.g. http://127.0.0.1:9464")
	service := flag.String("service", "", "the Argo template's `service` argument")
	revision := flag.String("revision", "", "the Argo template's `revision` argument")
	argoFile := flag.String("argo", "", "an Argo Rollouts AnalysisTemplate")
	flaggerFile := flag.String("flagger", "", "a Flagger Canary")
	flag.Parse()
	if *ripcord == "" || *argoFile == "" || *flaggerFile == "" {
		fail(fmt.Errorf("-ripcord, -argo and -flagger are required"))
	}
	out := json.NewEncoder(os.Stdout)
	for _, line := range argo(*argoFile, *ripcord, *service, *revision) {
		must(out.Encode(line))
	}
	for _, line := range flagger(*flaggerFile, *ripcord) {
		must(out.Encode(line))
	}
}

// ArgoResult is one metric's measurement.
type ArgoResult struct {
	Peer    string `json:"peer"`
	Metric  string `json:"metric"`
	URL     string `json:"url"`
	Phase   string `json:"phase"`
	Value   string `json:"value"`
	Message string `json:"message"`
}

func argo(file, ripcord, service, revision string) []ArgoResult {
	var t v1alpha1.AnalysisTemplate
	readYAML(file, &t)
	args := make([]v1alpha1.Argument, 0, len(t.Spec.Args))
	for _, a := range t.Spec.Args {
		switch a.Name {
		case "service":
			a.Value = &service
		case "revision":
			a.Value = &revision
		case "ripcord":
			a.Value = &ripcord
		}
		args = append(args, a)
	}
	logger := *log.WithField("peer", "argo")
	var results []ArgoResult
	for _, m := range t.Spec.Metrics {
		metric := resolve(m, args)
		if metric.Provider.Web == nil {
			fail(fmt.Errorf("%s: metric %s has no web provider", file, m.Name))
		}
		client, err := webmetric.NewWebMetricHttpClient(metric)
		must(err)
		parser, err := webmetric.NewWebMetricJsonParser(metric)
		must(err)
		p := webmetric.NewWebMetricProvider(logger, client, parser)
		run := &v1alpha1.AnalysisRun{Spec: v1alpha1.AnalysisRunSpec{Metrics: t.Spec.Metrics, Args: args}}
		m := p.Run(run, metric)
		results = append(results, ArgoResult{
			Peer: "argo", Metric: metric.Name, URL: metric.Provider.Web.URL,
			Phase: string(m.Phase), Value: m.Value, Message: m.Message,
		})
	}
	return results
}

// resolve fills a metric's {{args.*}} the way Argo's analysis controller
// does: the metric as JSON, templated, read back.
func resolve(m v1alpha1.Metric, args []v1alpha1.Argument) v1alpha1.Metric {
	raw, err := json.Marshal(m)
	must(err)
	text, err := templateutil.ResolveQuotedArgs(string(raw), args)
	must(err)
	var out v1alpha1.Metric
	must(json.Unmarshal([]byte(text), &out))
	return out
}

// FlaggerResult is one webhook's call.
type FlaggerResult struct {
	Peer  string `json:"peer"`
	Hook  string `json:"hook"`
	Type  string `json:"type"`
	URL   string `json:"url"`
	Phase string `json:"phase"`
	// Passed: CallWebhook returned no error (a confirm-* hook lets the
	// canary go on; a rollback hook rolls it back).
	Passed bool   `json:"passed"`
	Error  string `json:"error"`
}

func flagger(file, ripcord string) []FlaggerResult {
	var c flaggerv1.Canary
	readYAML(file, &c)
	base, err := url.Parse(ripcord)
	must(err)
	c.Status.Phase = flaggerv1.CanaryPhaseWaiting
	var results []FlaggerResult
	for _, w := range c.GetAnalysis().Webhooks {
		u, err := url.Parse(w.URL)
		must(err)
		u.Scheme, u.Host = base.Scheme, base.Host
		w.URL = u.String()
		// The phase each scheduler step passes (scheduler_hooks.go).
		phase := flaggerv1.CanaryPhaseProgressing
		if w.Type == flaggerv1.ConfirmRolloutHook {
			phase = c.Status.Phase
		}
		err = controller.CallWebhook(c, phase, w)
		r := FlaggerResult{
			Peer: "flagger", Hook: w.Name, Type: string(w.Type), URL: w.URL,
			Phase: string(phase), Passed: err == nil,
		}
		if err != nil {
			r.Error = err.Error()
		}
		results = append(results, r)
	}
	return results
}

func readYAML(file string, into any) {
	raw, err := os.ReadFile(file)
	must(err)
	must(yaml.UnmarshalStrict(raw, into))
}

func must(err error) {
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "peers:", err)
	os.Exit(2)
}
