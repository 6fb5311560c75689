// bundle-validate: validates an OLM bundle directory with the operator-framework's own
// validation library (github.com/operator-framework/api pkg/validation), the library
// `operator-sdk bundle validate` runs. The module's cmd/operator-verify prints the same
// results but always exits 0, so CI could not fail on them; this exits 1 on any error.
//
// Validators: the default bundle set (CSV, CRDs, bundle: owned CRDs present, install
// modes, RBAC, names), the object validator, good practices, OperatorHub (v2) metadata,
// and the deprecated-API check for the Kubernetes version given with -k8s-version.
//
// Usage: bundle-validate [-k8s-version 1.34] BUNDLE_DIR
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/validation"
)

func main() {
	k8sVersion := flag.String("k8s-version", "", "Kubernetes version the bundle must install on (deprecated-API check)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: bundle-validate [-k8s-version X.Y] BUNDLE_DIR")
		os.Exit(2)
	}
	bundle, err := manifests.GetBundleFromDir(flag.Arg(0))
	if err != nil || bundle == nil {
		fmt.Fprintf(os.Stderr, "reading the bundle in %s: %v\n", flag.Arg(0), err)
		os.Exit(1)
	}
	validators := validation.DefaultBundleValidators.WithValidators(
		validation.ObjectValidator,
		validation.GoodPracticesValidator,
		validation.OperatorHubV2Validator,
		validation.AlphaDeprecatedAPIsValidator,
	)
	objs := bundle.ObjectsToValidate()
	if *k8sVersion != "" {
		objs = append(objs, map[string]string{"k8s-version": *k8sVersion})
	}
	failed := false
	checked := 0
	for _, r := range validators.Validate(objs...) {
		checked++
		for _, e := range r.Errors {
			failed = true
			fmt.Printf("ERROR   %s: %s\n", r.Name, e.Error())
		}
		for _, w := range r.Warnings {
			fmt.Printf("WARNING %s: %s\n", r.Name, w.Error())
		}
	}
	if failed {
		fmt.Printf("bundle %s is invalid\n", flag.Arg(0))
		os.Exit(1)
	}
	fmt.Printf("bundle %s is valid (%d results)\n", flag.Arg(0), checked)
}
