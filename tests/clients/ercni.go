// ercni: drive a CNI network config through libcni, the library container runtimes use.
//
// usage: ercni add|check|del|validate|cached|version CONFIG NETNS CONTAINERID IFNAME [K=V;K=V]
//
// CONFIG is a conflist (has "plugins"), driven with the *NetworkList calls, or a
// single-plugin .conf, driven with the *Network calls (libcni's two code paths).
// CNI_PATH (plugin dirs) is read from the environment; results are cached in
// $ERCNI_CACHE (default /var/lib/cni). libcni passes our whole environment on
// to the plugin. Errors go to stderr; a libcni/plugin error exits 1.
//
// Built in GOPATH mode against Debian's golang-github-appc-cni-dev (libcni 1.1.2):
// see build.sh.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

// network hides the difference between a single config and a list.
type network interface {
	add(ctx context.Context, c *libcni.CNIConfig, rt *libcni.RuntimeConf) (types.Result, error)
	check(ctx context.Context, c *libcni.CNIConfig, rt *libcni.RuntimeConf) error
	del(ctx context.Context, c *libcni.CNIConfig, rt *libcni.RuntimeConf) error
	validate(ctx context.Context, c *libcni.CNIConfig) ([]string, error)
	cached(c *libcni.CNIConfig, rt *libcni.RuntimeConf) (types.Result, error)
	types() []string
}

type single struct{ net *libcni.NetworkConfig }

func (s single) add(ctx context.Context, c *libcni.CNIConfig, rt *libcni.RuntimeConf) (types.Result, error) {
	return c.AddNetwork(ctx, s.net, rt)
}
func (s single) check(ctx context.Context, c *libcni.CNIConfig, rt *libcni.RuntimeConf) error {
	return c.CheckNetwork(ctx, s.net, rt)
}
func (s single) del(ctx context.Context, c *libcni.CNIConfig, rt *libcni.RuntimeConf) error {
	return c.DelNetwork(ctx, s.net, rt)
}
func (s single) validate(ctx context.Context, c *libcni.CNIConfig) ([]string, error) {
	return c.ValidateNetwork(ctx, s.net)
}
func (s single) cached(c *libcni.CNIConfig, rt *libcni.RuntimeConf) (types.Result, error) {
	return c.GetNetworkCachedResult(s.net, rt)
}
func (s single) types() []string { return []string{s.net.Network.Type} }

type list struct{ list *libcni.NetworkConfigList }

func (l list) add(ctx context.Context, c *libcni.CNIConfig, rt *libcni.RuntimeConf) (types.Result, error) {
	return c.AddNetworkList(ctx, l.list, rt)
}
func (l list) check(ctx context.Context, c *libcni.CNIConfig, rt *libcni.RuntimeConf) error {
	return c.CheckNetworkList(ctx, l.list, rt)
}
func (l list) del(ctx context.Context, c *libcni.CNIConfig, rt *libcni.RuntimeConf) error {
	return c.DelNetworkList(ctx, l.list, rt)
}
func (l list) validate(ctx context.Context, c *libcni.CNIConfig) ([]string, error) {
	return c.ValidateNetworkList(ctx, l.list)
}
func (l list) cached(c *libcni.CNIConfig, rt *libcni.RuntimeConf) (types.Result, error) {
	return c.GetNetworkListCachedResult(l.list, rt)
}
func (l list) types() []string {
	out := make([]string, 0, len(l.list.Plugins))
	for _, p := range l.list.Plugins {
		out = append(out, p.Network.Type)
	}
	return out
}

func die(err error) {
	fmt.Fprintln(os.Stderr, "ercni:", err)
	os.Exit(1)
}

func load(file string) (network, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	if _, ok := probe["plugins"]; ok {
		l, err := libcni.ConfListFromBytes(data)
		return list{l}, err
	}
	n, err := libcni.ConfFromBytes(data)
	return single{n}, err
}

func runtimeConf(netns, containerID, ifname, cniArgs string) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: containerID, NetNS: netns, IfName: ifname}
	if cniArgs == "" {
		return rt
	}
	for _, kv := range strings.Split(cniArgs, ";") {
		k, v, _ := strings.Cut(kv, "=")
		rt.Args = append(rt.Args, [2]string{k, v})
	}
	return rt
}

func printJSON(v interface{}) {
	out, err := json.Marshal(v)
	if err != nil {
		die(err)
	}
	fmt.Println(string(out))
}

func main() {
	if len(os.Args) < 6 {
		die(fmt.Errorf("usage: ercni add|check|del|validate|cached|version CONFIG NETNS CONTAINERID IFNAME [CNI_ARGS]"))
	}
	verb := os.Args[1]
	net, err := load(os.Args[2])
	if err != nil {
		die(err)
	}
	cacheDir := os.Getenv("ERCNI_CACHE")
	if cacheDir == "" {
		cacheDir = "/var/lib/cni"
	}
	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(os.Getenv("CNI_PATH")), cacheDir, nil)
	cniArgs := ""
	if len(os.Args) > 6 {
		cniArgs = os.Args[6]
	}
	rt := runtimeConf(os.Args[3], os.Args[4], os.Args[5], cniArgs)
	ctx := context.Background()
	switch verb {
	case "add":
		res, aerr := net.add(ctx, cni, rt)
		if aerr != nil {
			die(aerr)
		}
		printJSON(res)
	case "check":
		err = net.check(ctx, cni, rt)
	case "del":
		err = net.del(ctx, cni, rt)
	case "validate":
		caps, verr := net.validate(ctx, cni)
		if verr != nil {
			die(verr)
		}
		printJSON(map[string]interface{}{"capabilities": caps})
	case "cached":
		res, cerr := net.cached(cni, rt)
		if cerr != nil || res == nil {
			die(fmt.Errorf("no cached result (%v)", cerr))
		}
		printJSON(res)
	case "version":
		out := map[string][]string{}
		for _, t := range net.types() {
			info, verr := cni.GetVersionInfo(ctx, t)
			if verr != nil {
				die(verr)
			}
			out[t] = info.SupportedVersions()
		}
		printJSON(out)
	default:
		err = fmt.Errorf("unknown verb %q", verb)
	}
	if err != nil {
		die(err)
	}
}
