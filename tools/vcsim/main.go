// Command vcsim runs govmomi's vCenter simulator for vcfm's tests, benchmarks and demo:
// a VPX inventory with the vAPI REST endpoints, served over TLS with a certificate made
// for the listen address, a realistic `about`, a clonable template VM, an optional
// limited-privilege user, and a HasUserPrivilegeOnEntities that evaluates real
// permissions (govmomi 0.24's always answers "granted").
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator" // registers /rest/com/vmware/cis/...
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:443", "listen address ip:port")
	username := flag.String("username", "administrator@vsphere.local", "administrator user name")
	password := flag.String("password", "", "administrator password (required)")
	limitedUser := flag.String("limited-user", "", "extra user with a role lacking -limited-missing privileges")
	limitedPass := flag.String("limited-password", "", "password of -limited-user")
	limitedMissing := flag.String("limited-missing", "Folder.Create", "comma-separated privileges the limited role lacks")
	certDir := flag.String("cert-dir", "", "directory for ca.pem/ca-key.pem (reused when present) and server.pem (default: <tmp>/vcsim-<listen>)")
	noTLS := flag.Bool("no-tls", false, "serve plain HTTP (TLS is on by default)")
	dc := flag.Int("dc", 1, "datacenters")
	clusters := flag.Int("cluster", 1, "clusters per datacenter")
	hosts := flag.Int("host", 3, "hosts per cluster")
	vms := flag.Int("vm", 2, "VMs per resource pool / standalone host")
	ds := flag.Int("ds", 1, "datastores")
	version := flag.String("about-version", "8.0.2", "about.version")
	apiVersion := flag.String("about-api-version", "8.0.2.0", "about.apiVersion")
	build := flag.String("about-build", "22385739", "about.build")
	template := flag.String("template", "rhcos-template", "name of the template VM created in every datacenter's vm folder")
	idle := flag.Duration("session-idle-timeout", 0, "expire idle SOAP and REST sessions (0 = never)")
	stdinEOF := flag.Bool("exit-on-stdin-eof", false, "exit when stdin closes (parent died)")
	flag.Parse()
	if *password == "" {
		log.Fatal("-password is required")
	}

	simulator.SessionIdleTimeout = *idle
	model := simulator.VPX()
	model.Datacenter, model.Cluster, model.ClusterHost, model.Machine, model.Datastore = *dc, *clusters, *hosts, *vms, *ds
	about := &model.ServiceContent.About
	about.Version, about.ApiVersion, about.Build = *version, *apiVersion, *build
	about.FullName = fmt.Sprintf("VMware vCenter Server %s build-%s", *version, *build)
	about.InstanceUuid = uuid.New().String()
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	defer model.Remove()

	users := map[string]string{*username: *password}
	if *limitedUser != "" {
		users[*limitedUser] = *limitedPass
	}
	authz := &authzManager{simulator.Map.Get(model.ServiceContent.AuthorizationManager.Reference()).(*simulator.AuthorizationManager)}
	simulator.Map.Put(authz)
	root := model.ServiceContent.RootFolder
	perms := []types.Permission{{Entity: &root, Principal: *username, RoleId: -1, Propagate: true}}
	if *limitedUser != "" {
		roleID := authz.addLimitedRole(strings.Split(*limitedMissing, ","))
		perms = append(perms, types.Permission{Entity: &root, Principal: *limitedUser, RoleId: roleID, Propagate: true})
	}
	authz.grant(root, perms)

	pcRef := model.ServiceContent.PropertyCollector
	paging := &pagingCollector{}
	paging.PropertyCollector.PropertyCollector = simulator.Map.Get(pcRef).(*simulator.PropertyCollector).PropertyCollector
	simulator.Map.Put(paging)

	ctx := context.Background()
	client, err := vim25.NewClient(ctx, model.Service)
	if err != nil {
		log.Fatal(err)
	}
	inventory, templates := describe(ctx, client, *template)

	model.Service.RegisterEndpoints = true
	model.Service.Listen = &url.URL{Host: *listen}
	scheme := "http"
	var caFile string
	if *certDir == "" {
		*certDir = filepath.Join(os.TempDir(), "vcsim-"+strings.NewReplacer(":", "_", "/", "_").Replace(*listen))
	}
	if !*noTLS {
		cfg, ca, err := tlsConfig(*certDir, *listen)
		if err != nil {
			log.Fatal(err)
		}
		model.Service.TLS, caFile, scheme = cfg, ca, "https"
	}
	server := model.Service.NewServer()
	defer server.Close()
	// Enforce the user table on SOAP Login and REST session creation (vcsim itself accepts
	// any non-empty credentials when no single user is configured).
	server.Config.Handler = &credentialGate{next: server.Config.Handler, users: users}

	host := *listen
	if h, p, err := net.SplitHostPort(*listen); err == nil && p == "443" && scheme == "https" {
		host = h
	}
	ready := map[string]interface{}{
		"url":         fmt.Sprintf("%s://%s/sdk", scheme, host),
		"server":      host,
		"ca_file":     caFile,
		"version":     *version,
		"api_version": *apiVersion,
		"templates":   templates,
		"inventory":   inventory,
	}
	line, _ := json.Marshal(ready)
	fmt.Printf("VCSIM_READY %s\n", line)
	log.Printf("vcsim %s (vCenter %s, API %s) user %s; CA %s; templates %v", ready["url"], *version, *apiVersion, *username, caFile, templates)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	if *stdinEOF {
		go func() { _, _ = io.Copy(ioutil.Discard, os.Stdin); sig <- syscall.SIGTERM }()
	}
	<-sig
}

// describe creates the template VM in each datacenter and returns the inventory paths.
func describe(ctx context.Context, c *vim25.Client, templateName string) (map[string][]string, []string) {
	f := find.NewFinder(c, false)
	inv := map[string][]string{}
	var templates []string
	dcs, err := f.DatacenterList(ctx, "*")
	if err != nil {
		log.Fatal(err)
	}
	add := func(kind string, list []string) { inv[kind] = append(inv[kind], list...) }
	for _, dc := range dcs {
		f.SetDatacenter(dc)
		inv["datacenters"] = append(inv["datacenters"], dc.InventoryPath)
		cl, _ := f.ClusterComputeResourceList(ctx, "*")
		add("clusters", paths(cl))
		hs, _ := f.HostSystemList(ctx, "*")
		add("hosts", paths(hs))
		dss, _ := f.DatastoreList(ctx, "*")
		add("datastores", paths(dss))
		nets, _ := f.NetworkList(ctx, "*")
		add("networks", paths(nets))
		pools, _ := f.ResourcePoolList(ctx, "*/Resources")
		add("resource_pools", paths(pools))
		vmsList, _ := f.VirtualMachineList(ctx, "*")
		add("vms", paths(vmsList))
		if len(cl) == 0 || len(vmsList) == 0 {
			continue
		}
		// Clone the first cluster VM as a template, like an RHCOS template in a real vCenter.
		var src *object.VirtualMachine
		for _, vm := range vmsList {
			if strings.Contains(vm.InventoryPath, "_C0_") {
				src = vm
				break
			}
		}
		if src == nil {
			src = vmsList[0]
		}
		folders, err := dc.Folders(ctx)
		if err != nil {
			log.Fatal(err)
		}
		task, err := src.Clone(ctx, folders.VmFolder, templateName, types.VirtualMachineCloneSpec{Template: true})
		if err == nil {
			err = task.Wait(ctx)
		}
		if err != nil {
			log.Fatalf("creating template: %v", err)
		}
		templates = append(templates, dc.InventoryPath+"/vm/"+templateName)
	}
	return inv, templates
}

func paths[T any](list []T) []string {
	out := make([]string, 0, len(list))
	for _, o := range list {
		out = append(out, reflect.Indirect(reflect.ValueOf(o)).FieldByName("InventoryPath").String())
	}
	return out
}

// authzManager evaluates HasUserPrivilegeOnEntities against the permissions and roles
// stored in the simulator, with vSphere's rule: the permission nearest the entity wins
// (on ancestors only when it propagates); the Admin role (-1) holds every privilege.
type authzManager struct {
	*simulator.AuthorizationManager
}

func (m *authzManager) addLimitedRole(missing []string) int32 {
	skip := map[string]bool{}
	for _, p := range missing {
		skip[strings.TrimSpace(p)] = true
	}
	var privs []string
	for _, r := range m.RoleList {
		if r.RoleId == -1 {
			for _, p := range r.Privilege {
				if !skip[p] {
					privs = append(privs, p)
				}
			}
		}
	}
	if f := m.AddAuthorizationRole(&types.AddAuthorizationRole{Name: "vcfm-limited", PrivIds: privs}).Fault(); f != nil {
		log.Fatalf("AddAuthorizationRole: %v", f.String)
	}
	for _, r := range m.RoleList {
		if r.Name == "vcfm-limited" {
			return r.RoleId
		}
	}
	log.Fatal("vcfm-limited role not found")
	return 0
}

func (m *authzManager) grant(entity types.ManagedObjectReference, extra []types.Permission) {
	res := m.RetrieveEntityPermissions(&types.RetrieveEntityPermissions{Entity: entity}).(*methods.RetrieveEntityPermissionsBody)
	all := append(res.Res.Returnval, extra...)
	m.SetEntityPermissions(&types.SetEntityPermissions{Entity: entity, Permission: all})
}

func (m *authzManager) HasUserPrivilegeOnEntities(req *types.HasUserPrivilegeOnEntities) soap.HasFault {
	body := &methods.HasUserPrivilegeOnEntitiesBody{Res: &types.HasUserPrivilegeOnEntitiesResponse{}}
	for _, ref := range req.Entities {
		granted, fault := m.userPrivileges(req.UserName, ref)
		if fault != nil {
			body.Fault_ = simulator.Fault("", fault)
			body.Res = nil
			return body
		}
		ep := types.EntityPrivilege{Entity: ref}
		for _, id := range req.PrivId {
			ep.PrivAvailability = append(ep.PrivAvailability, types.PrivilegeAvailability{PrivId: id, IsGranted: granted(id)})
		}
		body.Res.Returnval = append(body.Res.Returnval, ep)
	}
	return body
}

func (m *authzManager) userPrivileges(user string, ref types.ManagedObjectReference) (func(string) bool, types.BaseMethodFault) {
	obj, ok := simulator.Map.Get(ref).(mo.Entity)
	if !ok {
		return nil, &types.ManagedObjectNotFound{Obj: ref}
	}
	for level := 0; ; level++ {
		res := m.RetrieveEntityPermissions(&types.RetrieveEntityPermissions{Entity: obj.Reference()}).(*methods.RetrieveEntityPermissionsBody)
		for _, p := range res.Res.Returnval {
			if p.Group || p.Principal != user || (level > 0 && !p.Propagate) {
				continue
			}
			for _, r := range m.RoleList {
				if r.RoleId != p.RoleId {
					continue
				}
				set := map[string]bool{}
				for _, id := range r.Privilege {
					set[id] = true
				}
				admin := r.RoleId == -1
				return func(id string) bool { return admin || set[id] }, nil
			}
		}
		parent := obj.Entity().Parent
		if parent == nil {
			return func(string) bool { return false }, nil
		}
		if obj, ok = simulator.Map.Get(*parent).(mo.Entity); !ok {
			return func(string) bool { return false }, nil
		}
	}
}

// pagingCollector adds RetrievePropertiesEx paging (maxObjects + token) and
// ContinueRetrievePropertiesEx, which vcsim 0.24 lacks, so clients' continuation handling is
// exercised as against a real vCenter. vcsim creates one zero-valued copy per session (by
// reflection), so tokens are per session, as in vCenter.
type pagingCollector struct {
	simulator.PropertyCollector
	pages  map[string][]types.ObjectContent
	size   map[string]int
	nextID int
}

func (p *pagingCollector) RetrievePropertiesEx(ctx *simulator.Context, r *types.RetrievePropertiesEx) soap.HasFault {
	body := p.PropertyCollector.RetrievePropertiesEx(ctx, r).(*methods.RetrievePropertiesExBody)
	max := int(r.Options.MaxObjects)
	if body.Res == nil || body.Res.Returnval == nil || max <= 0 || len(body.Res.Returnval.Objects) <= max {
		return body
	}
	if p.pages == nil {
		p.pages, p.size = map[string][]types.ObjectContent{}, map[string]int{}
	}
	p.nextID++
	token := fmt.Sprintf("page-%d", p.nextID)
	all := body.Res.Returnval.Objects
	p.pages[token], p.size[token] = all[max:], max
	body.Res.Returnval.Objects, body.Res.Returnval.Token = all[:max], token
	return body
}

func (p *pagingCollector) ContinueRetrievePropertiesEx(ctx *simulator.Context, r *types.ContinueRetrievePropertiesEx) soap.HasFault {
	body := &methods.ContinueRetrievePropertiesExBody{}
	rest, ok := p.pages[r.Token]
	if !ok {
		body.Fault_ = simulator.Fault("invalid token", &types.InvalidArgument{InvalidProperty: "token"})
		return body
	}
	max := p.size[r.Token]
	delete(p.pages, r.Token)
	res := types.RetrieveResult{Objects: rest}
	if len(rest) > max {
		p.pages[r.Token] = rest[max:]
		res = types.RetrieveResult{Objects: rest[:max], Token: r.Token}
	}
	body.Res = &types.ContinueRetrievePropertiesExResponse{Returnval: res}
	return body
}

func (p *pagingCollector) CancelRetrievePropertiesEx(ctx *simulator.Context, r *types.CancelRetrievePropertiesEx) soap.HasFault {
	delete(p.pages, r.Token)
	return &methods.CancelRetrievePropertiesExBody{Res: &types.CancelRetrievePropertiesExResponse{}}
}

// credentialGate checks SOAP Login and REST session credentials against a user table.
type credentialGate struct {
	next  http.Handler
	users map[string]string
}

const invalidLoginFault = `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>Cannot complete login due to an incorrect user name or password.</faultstring><detail><InvalidLoginFault xmlns="urn:vim25" xsi:type="InvalidLogin"></InvalidLoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>`

func (g *credentialGate) ok(user, pass string) bool {
	want, found := g.users[user]
	return found && pass == want
}

func (g *credentialGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == "/sdk" {
		body, err := ioutil.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.Body = ioutil.NopCloser(bytes.NewReader(body))
		if user, pass, isLogin := loginCredentials(body); isLogin && !g.ok(user, pass) {
			w.Header().Set("Content-Type", "text/xml; charset=utf-8")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, invalidLoginFault)
			return
		}
	}
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/com/vmware/cis/session") && r.URL.Query().Get("~action") == "" {
		if user, pass, ok := r.BasicAuth(); ok && !g.ok(user, pass) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"type":"com.vmware.vapi.std.errors.unauthenticated","value":{"messages":[{"args":[],"default_message":"Authentication required.","id":"com.vmware.vapi.endpoint.method.authentication.required"}]}}`)
			return
		}
	}
	g.next.ServeHTTP(w, r)
}

func loginCredentials(body []byte) (user, pass string, isLogin bool) {
	dec := xml.NewDecoder(bytes.NewReader(body))
	var field *string
	for {
		tok, err := dec.Token()
		if err != nil {
			return
		}
		switch t := tok.(type) {
		case xml.StartElement:
			switch t.Name.Local {
			case "Login":
				isLogin = true
			case "userName":
				field = &user
			case "password":
				field = &pass
			}
		case xml.CharData:
			if field != nil {
				*field += string(t)
			}
		case xml.EndElement:
			field = nil
		}
	}
}

// tlsConfig loads or creates a CA in dir and issues a server certificate for the listen IP.
func tlsConfig(dir, listen string) (*tls.Config, string, error) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	caFile, caKeyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	caCert, caKey, err := loadCA(caFile, caKeyFile)
	if err != nil {
		caCert, caKey, err = newCA(caFile, caKeyFile)
		if err != nil {
			return nil, "", err
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: host, Organization: []string{"vcfm vcsim"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, "", err
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	if err := ioutil.WriteFile(filepath.Join(dir, "server.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, "", err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, caFile, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

func loadCA(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := ioutil.ReadFile(certFile)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := ioutil.ReadFile(keyFile)
	if err != nil {
		return nil, nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, fmt.Errorf("bad CA PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	return cert, key, err
}

func newCA(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "vcfm vcsim CA " + uuid.New().String()[:8]},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	if err := ioutil.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, nil, err
	}
	if err := ioutil.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}
