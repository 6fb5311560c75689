// Command vcsim runs govmomi's vCenter simulator (the govmomi module named in go.mod) for
// vcfm's tests, benchmarks and demo: a VPX inventory with the vAPI REST endpoints, served
// over TLS with a certificate made for the listen address, a realistic `about`, clonable
// templates at a current virtual hardware version, login checked against a user table,
// and the vCenter behaviours vcsim lacks that vcfm must be tested against:
//
//   - per-user privileges: a limited user whose role lacks named privileges gets
//     isGranted=false from HasUserPrivilegeOnEntities and NoPermission (SOAP) or
//     `unauthorized` (REST) from the calls that need them (vcsim grants everything);
//   - tag associations removed when their object is destroyed (vcsim keeps them);
//   - optional older-hardware templates and a same-named VM in another folder, for the
//     checks the OpenShift machine controller makes on templates.
package main

import (
	"bufio"
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
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/esx"
	_ "github.com/vmware/govmomi/vapi/simulator" // registers /rest/com/vmware/cis/... and /api
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const govmomiModule = "github.com/vmware/govmomi"

func main() {
	showVersion := flag.Bool("version", false, "print the govmomi module version this binary was built from and exit")
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
	hwVersion := flag.String("hardware-version", "vmx-19", "virtual hardware version of the inventory's VMs (and so of their clones and new VMs)")
	templateHW := flag.String("template-hardware-version", "", "hardware version of the templates (default: -hardware-version); e.g. vmx-13 for a template the machine controller refuses (it needs 15+)")
	duplicate := flag.String("duplicate-template-folder", "", "also create a VM named like the template in this folder (created below each datacenter's vm folder)")
	idle := flag.Duration("session-idle-timeout", 0, "expire idle SOAP and REST sessions (0 = never)")
	stdinEOF := flag.Bool("exit-on-stdin-eof", false, "exit when stdin closes (parent died)")
	flag.Parse()
	if *showVersion {
		fmt.Printf("vcfm vcsim: %s %s (%s)\n", govmomiModule, govmomiVersion(), runtime.Version())
		return
	}
	if *password == "" {
		log.Fatal("-password is required")
	}
	if *templateHW == "" {
		*templateHW = *hwVersion
	}
	for _, v := range []string{*hwVersion, *templateHW} {
		if _, err := types.ParseHardwareVersion(v); err != nil {
			log.Fatalf("bad hardware version %q: %v", v, err)
		}
	}

	// Every VM the model creates, and so every clone of one, gets this version.
	esx.HardwareVersion = *hwVersion
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
	reg := model.Map()
	setup := &simulator.Context{Context: context.Background(), Map: reg}

	if *idle > 0 {
		// Read by simulator.SessionIdleWatch for SOAP and vAPI sessions alike.
		reg.OptionManager().UpdateOptions(&types.UpdateOptions{ChangedValue: []types.BaseOptionValue{
			&types.OptionValue{Key: "config.vmacore.soap.sessionTimeout", Value: idle.String()},
		}})
	}

	// Logins (SOAP Login and the REST session's basic auth both go through
	// SessionManager.Authenticate) are checked against this table. ValidLogin is only
	// consulted when Service.Listen carries a user other than simulator.DefaultLogin.
	users := map[string]string{*username: *password}
	if *limitedUser != "" {
		users[*limitedUser] = *limitedPass
	}
	reg.SessionManager().ValidLogin = func(req *types.Login) bool {
		want, found := users[req.UserName]
		return found && req.Password == want
	}

	authz := &authzManager{reg.Get(model.ServiceContent.AuthorizationManager.Reference()).(*simulator.AuthorizationManager), users}
	reg.Put(authz)
	root := model.ServiceContent.RootFolder
	perms := []types.Permission{{Entity: &root, Principal: *username, RoleId: -1, Propagate: true}}
	if *limitedUser != "" {
		roleID := authz.addLimitedRole(strings.Split(*limitedMissing, ","))
		perms = append(perms, types.Permission{Entity: &root, Principal: *limitedUser, RoleId: roleID, Propagate: true})
	}
	authz.grant(setup, root, perms)
	reg.Handler = authz.checkCall

	client, err := vim25.NewClient(context.Background(), model.Service)
	if err != nil {
		log.Fatal(err)
	}
	inv, err := describe(context.Background(), client, *template, *templateHW, *duplicate)
	if err != nil {
		log.Fatal(err)
	}

	model.Service.RegisterEndpoints = true
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*username, *password)}
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

	vapi, _ := model.Service.ServeMux.Handler(&http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/rest/com/vmware/cis/tagging/tag"}})
	tags, ok := vapi.(tagStore)
	if !ok {
		log.Fatalf("vapi simulator handler %T no longer offers the tag manager methods this helper uses", vapi)
	}
	reg.AddHandler(&tagJanitor{tags: tags})
	server.Config.Handler = &restGate{next: server.Config.Handler, vapi: vapi, authz: authz, ctx: setup, root: root}

	host := *listen
	if h, p, err := net.SplitHostPort(*listen); err == nil && p == "443" && scheme == "https" {
		host = h
	}
	ready := map[string]any{
		"url":                       fmt.Sprintf("%s://%s/sdk", scheme, host),
		"server":                    host,
		"ca_file":                   caFile,
		"version":                   *version,
		"api_version":               *apiVersion,
		"govmomi":                   govmomiVersion(),
		"hardware_version":          *hwVersion,
		"template_hardware_version": *templateHW,
		"templates":                 inv.templates,
		"duplicates":                inv.duplicates,
		"inventory":                 inv.paths,
	}
	line, _ := json.Marshal(ready)
	fmt.Printf("VCSIM_READY %s\n", line)
	log.Printf("vcsim %s (vCenter %s, API %s, govmomi %s) user %s; CA %s; templates %v", ready["url"], *version, *apiVersion, govmomiVersion(), *username, caFile, inv.templates)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	if *stdinEOF {
		go func() { bursts.read(os.Stdin); sig <- syscall.SIGTERM }()
	}
	<-sig
}

// govmomiVersion is the version of the govmomi module linked into this binary.
func govmomiVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, d := range bi.Deps {
		if d.Path == govmomiModule {
			if d.Replace != nil {
				return d.Replace.Version
			}
			return d.Version
		}
	}
	return "unknown"
}

type inventory struct {
	paths      map[string][]string
	templates  []string
	duplicates []string
}

// describe creates the template VM in each datacenter (and optionally a same-named VM in
// another folder) and returns the inventory paths.
func describe(ctx context.Context, c *vim25.Client, templateName, templateHW, dupFolder string) (*inventory, error) {
	f := find.NewFinder(c, false)
	inv := &inventory{paths: map[string][]string{}, templates: []string{}, duplicates: []string{}}
	dcs, err := f.DatacenterList(ctx, "*")
	if err != nil {
		return nil, err
	}
	add := func(kind string, list []string) { inv.paths[kind] = append(inv.paths[kind], list...) }
	for _, dc := range dcs {
		f.SetDatacenter(dc)
		inv.paths["datacenters"] = append(inv.paths["datacenters"], dc.InventoryPath)
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
		// Clone the first cluster VM as a template, like an RHCOS template in a real vCenter:
		// clone, set the template's hardware version, mark as template (a template's own
		// configuration cannot be changed).
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
			return nil, err
		}
		tmpl, err := clone(ctx, c, src, folders.VmFolder, templateName, nil)
		if err != nil {
			return nil, fmt.Errorf("creating template: %w", err)
		}
		if err := wait(tmpl.Reconfigure(ctx, types.VirtualMachineConfigSpec{Version: templateHW})); err != nil {
			return nil, fmt.Errorf("setting the template's hardware version: %w", err)
		}
		if err := tmpl.MarkAsTemplate(ctx); err != nil {
			return nil, fmt.Errorf("marking the template: %w", err)
		}
		inv.templates = append(inv.templates, dc.InventoryPath+"/vm/"+templateName)
		if dupFolder == "" {
			continue
		}
		// A plain VM with the template's name elsewhere in the datacenter: finding the
		// template by name alone now matches two VMs.
		folder := folders.VmFolder
		for _, part := range strings.Split(strings.Trim(dupFolder, "/"), "/") {
			if folder, err = folder.CreateFolder(ctx, part); err != nil {
				return nil, fmt.Errorf("creating folder %s: %w", dupFolder, err)
			}
		}
		pool, err := cl[0].ResourcePool(ctx)
		if err != nil {
			return nil, err
		}
		if _, err := clone(ctx, c, tmpl, folder, templateName, pool); err != nil {
			return nil, fmt.Errorf("creating the duplicate of the template: %w", err)
		}
		inv.duplicates = append(inv.duplicates, path.Join(dc.InventoryPath, "vm", strings.Trim(dupFolder, "/"), templateName))
	}
	return inv, nil
}

func clone(ctx context.Context, c *vim25.Client, src *object.VirtualMachine, folder *object.Folder, name string, pool *object.ResourcePool) (*object.VirtualMachine, error) {
	spec := types.VirtualMachineCloneSpec{}
	if pool != nil {
		ref := pool.Reference()
		spec.Location.Pool = &ref
	}
	task, err := src.Clone(ctx, folder, name, spec)
	if err != nil {
		return nil, err
	}
	info, err := task.WaitForResult(ctx)
	if err != nil {
		return nil, err
	}
	return object.NewVirtualMachine(c, info.Result.(types.ManagedObjectReference)), nil
}

func wait(task *object.Task, err error) error {
	if err != nil {
		return err
	}
	return task.Wait(context.Background())
}

func paths[T any](list []T) []string {
	out := make([]string, 0, len(list))
	for _, o := range list {
		out = append(out, reflect.Indirect(reflect.ValueOf(o)).FieldByName("InventoryPath").String())
	}
	return out
}

// ---------------------------------------------------------------- fault bursts

// faultBursts fails the next calls of a SOAP method with vim.fault.SystemError, the
// RuntimeFault vCenter answers for an internal error (vSphere Web Services API reference,
// "SystemError": "a general system error caused the failure", with a free-text reason; in
// govmomi vim25/types/types.go SystemError{RuntimeFault; Reason}), as while vpxd or one of
// its services restarts. Armed by the test over stdin, one line per burst:
// "system-error <Method> <count>"; each injected fault is logged.
type faultBursts struct {
	mu   sync.Mutex
	left map[string]int
}

var bursts = &faultBursts{left: map[string]int{}}

func (b *faultBursts) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var method string
		var n int
		if _, err := fmt.Sscanf(sc.Text(), "system-error %s %d", &method, &n); err != nil || n < 0 {
			log.Printf("ignoring command %q: want \"system-error <Method> <count>\"", sc.Text())
			continue
		}
		b.mu.Lock()
		b.left[method] += n
		b.mu.Unlock()
		log.Printf("armed %d SystemError fault(s) for %s", n, method)
		// The test waits for this line before the call it means to fault: the
		// command is read here, concurrently with the calls.
		fmt.Printf("VCSIM_ARMED %s %d\n", method, n)
	}
}

func (b *faultBursts) take(method string) types.BaseMethodFault {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.left[method] <= 0 {
		return nil
	}
	b.left[method]--
	log.Printf("injected SystemError into %s (%d left)", method, b.left[method])
	return &types.SystemError{Reason: "vcsim: injected fault burst (as during a vpxd service restart)"}
}

// ---------------------------------------------------------------- privileges

// authzManager evaluates permissions and roles stored in the simulator with vSphere's
// rule: the permission nearest the entity wins (on ancestors only when it propagates);
// the Admin role (-1) holds every privilege. It answers HasUserPrivilegeOnEntities and,
// through checkCall (the Registry's Handler hook), faults the calls a user lacks the
// privileges for with NoPermission, as vCenter does. govmomi's simulator answers
// "granted" for everything (simulator/authorization_manager.go HasUserPrivilegeOnEntities).
type authzManager struct {
	*simulator.AuthorizationManager
	users map[string]string // users whose privileges are enforced
}

// privilege is one privilege needed on one entity.
type privilege struct {
	on types.ManagedObjectReference
	id string
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

func (m *authzManager) grant(ctx *simulator.Context, entity types.ManagedObjectReference, extra []types.Permission) {
	res := m.RetrieveEntityPermissions(ctx, &types.RetrieveEntityPermissions{Entity: entity}).(*methods.RetrieveEntityPermissionsBody)
	all := append(res.Res.Returnval, extra...)
	m.SetEntityPermissions(&types.SetEntityPermissions{Entity: entity, Permission: all})
}

func (m *authzManager) HasUserPrivilegeOnEntities(ctx *simulator.Context, req *types.HasUserPrivilegeOnEntities) soap.HasFault {
	body := &methods.HasUserPrivilegeOnEntitiesBody{Res: &types.HasUserPrivilegeOnEntitiesResponse{}}
	for _, ref := range req.Entities {
		granted, fault := m.userPrivileges(ctx, req.UserName, ref)
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

func (m *authzManager) userPrivileges(ctx *simulator.Context, user string, ref types.ManagedObjectReference) (func(string) bool, types.BaseMethodFault) {
	obj, ok := ctx.Map.Get(ref).(mo.Entity)
	if !ok {
		return nil, &types.ManagedObjectNotFound{Obj: ref}
	}
	for level := 0; ; level++ {
		res := m.RetrieveEntityPermissions(ctx, &types.RetrieveEntityPermissions{Entity: obj.Reference()}).(*methods.RetrieveEntityPermissionsBody)
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
		if obj, ok = ctx.Map.Get(*parent).(mo.Entity); !ok {
			return func(string) bool { return false }, nil
		}
	}
}

// missing returns the first of needs that user lacks (nil when all are held). Entities
// that do not exist are skipped: the call itself reports them.
func (m *authzManager) missing(ctx *simulator.Context, user string, needs []privilege) *privilege {
	if _, enforced := m.users[user]; !enforced {
		return nil
	}
	for i, n := range needs {
		granted, fault := m.userPrivileges(ctx, user, n.on)
		if fault != nil {
			continue
		}
		if !granted(n.id) {
			return &needs[i]
		}
	}
	return nil
}

// checkCall is the Registry's Handler: called for every SOAP call before it runs, it
// answers NoPermission when the session's user lacks a privilege the call needs. The
// privileges are those vSphere's API reference lists for each method.
func (m *authzManager) checkCall(ctx *simulator.Context, method *simulator.Method) (mo.Reference, types.BaseMethodFault) {
	if f := bursts.take(method.Name); f != nil {
		return nil, f
	}
	if req, ok := method.Body.(*types.CloneVM_Task); ok {
		cloneOwnDisks(ctx, req)
	}
	if ctx.Session == nil {
		return nil, nil
	}
	needs := m.callPrivileges(ctx, method)
	if len(needs) == 0 {
		return nil, nil
	}
	if miss := m.missing(ctx, ctx.Session.UserName, needs); miss != nil {
		log.Printf("%s: NoPermission for %s: %s on %s", method.Name, ctx.Session.UserName, miss.id, miss.on)
		on := miss.on
		return nil, &types.NoPermission{
			Object:            &on,
			PrivilegeId:       miss.id,
			MissingPrivileges: []types.NoPermissionEntityPrivileges{{Entity: on, PrivilegeIds: []string{miss.id}}},
		}
	}
	return nil, nil
}

// cloneOwnDisks makes a clone spec's disk edits apply to the clone's own copy of the
// disk, as vCenter does. The OpenShift machine controller resizes the template's disk
// by sending that disk device, backing file name included, as an Edit in the clone's
// deviceChange (machine-api-operator pkg/controller/vsphere/reconciler.go, getDiskSpec
// in clone). govmomi's simulator applies the edit verbatim (simulator/virtual_machine.go
// CloneVMTask, configureDevices): the clone's disk then names the template's vmdk, and
// destroying the clone deletes the template's disk, so every later clone comes out
// without a disk and with the template's NIC twice (configureDevices fails after its
// in-place removeDevice, and CloneVMTask ignores that error). Each edited file of the
// source is renamed to the clone's file as the simulator names it ("[ds] <clone>/<clone>.vmdk").
func cloneOwnDisks(ctx *simulator.Context, req *types.CloneVM_Task) {
	src, ok := ctx.Map.Get(req.This).(*simulator.VirtualMachine)
	if !ok || src.Config == nil || req.Spec.Config == nil {
		return
	}
	srcFiles := map[string]bool{}
	for _, d := range src.Config.Hardware.Device {
		if disk, ok := d.(*types.VirtualDisk); ok {
			if b, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
				srcFiles[b.GetVirtualDeviceFileBackingInfo().FileName] = true
			}
		}
	}
	for _, change := range req.Spec.Config.DeviceChange {
		spec := change.GetVirtualDeviceConfigSpec()
		disk, ok := spec.Device.(*types.VirtualDisk)
		if !ok || spec.Operation != types.VirtualDeviceConfigSpecOperationEdit {
			continue
		}
		b, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo)
		if !ok {
			continue
		}
		info := b.GetVirtualDeviceFileBackingInfo()
		if !srcFiles[info.FileName] {
			continue
		}
		ds := ""
		if i := strings.Index(info.FileName, "] "); strings.HasPrefix(info.FileName, "[") && i > 0 {
			ds = info.FileName[1:i]
		}
		if req.Spec.Location.Datastore != nil {
			if d, ok := ctx.Map.Get(*req.Spec.Location.Datastore).(*simulator.Datastore); ok {
				ds = d.Name
			}
		}
		base := path.Base(info.FileName[strings.Index(info.FileName, "]")+1:])
		base = strings.Replace(base, src.Name, req.Name, 1)
		info.FileName = fmt.Sprintf("[%s] %s/%s", ds, req.Name, base)
	}
}

func (m *authzManager) callPrivileges(ctx *simulator.Context, method *simulator.Method) []privilege {
	this := method.This
	switch req := method.Body.(type) {
	case *types.CreateFolder:
		return []privilege{{this, "Folder.Create"}}
	case *types.CloneVM_Task:
		// As listed for vCenter's clone (vSphere Automation API vcenter/vm?action=clone):
		// Clone on the source, CreateFromExisting on the folder, AssignVMToPool on the
		// pool, AllocateSpace on the datastore.
		needs := []privilege{{this, "VirtualMachine.Provisioning.Clone"}, {req.Folder, "VirtualMachine.Inventory.CreateFromExisting"}}
		if p := req.Spec.Location.Pool; p != nil {
			needs = append(needs, privilege{*p, "Resource.AssignVMToPool"})
		}
		if d := req.Spec.Location.Datastore; d != nil {
			needs = append(needs, privilege{*d, "Datastore.AllocateSpace"})
		}
		return needs
	case *types.Destroy_Task:
		switch this.Type {
		case "VirtualMachine":
			return []privilege{{this, "VirtualMachine.Inventory.Delete"}}
		case "Folder":
			return []privilege{{this, "Folder.Delete"}}
		}
	case *types.PowerOnVM_Task:
		return []privilege{{this, "VirtualMachine.Interact.PowerOn"}}
	case *types.PowerOffVM_Task:
		return []privilege{{this, "VirtualMachine.Interact.PowerOff"}}
	case *types.MarkAsTemplate:
		return []privilege{{this, "VirtualMachine.Provisioning.MarkAsTemplate"}}
	case *types.Rename_Task:
		if this.Type == "Folder" {
			return []privilege{{this, "Folder.Rename"}}
		}
	}
	return nil
}

// restGate enforces the tagging privileges on the vAPI REST calls that change tags, as
// vCenter does: creating or deleting categories and tags needs the privilege globally
// (here: on the root folder), attaching or detaching needs AttachTag globally and
// ObjectAttachable on the object (vSphere Security, "vSphere Tagging Privileges").
type restGate struct {
	next  http.Handler
	vapi  http.Handler
	authz *authzManager
	ctx   *simulator.Context
	root  types.ManagedObjectReference
}

const taggingPrefix = "/rest/com/vmware/cis/tagging/"

func (g *restGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, taggingPrefix) && r.Method != http.MethodGet {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if needs := g.privileges(r, body); len(needs) > 0 {
			if user := g.sessionUser(r); user != "" {
				if miss := g.authz.missing(g.ctx, user, needs); miss != nil {
					log.Printf("%s %s: unauthorized for %s: %s on %s", r.Method, r.URL.Path, user, miss.id, miss.on)
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusForbidden)
					_, _ = io.WriteString(w, `{"type":"com.vmware.vapi.std.errors.unauthorized","value":{"messages":[{"args":[],"default_message":"Unable to authorize user","id":"vapi.security.authorization.invalid"}]}}`)
					return
				}
			}
		}
	}
	g.next.ServeHTTP(w, r)
}

// sessionUser asks the vAPI simulator whose the request's session is ("" when none is
// valid: the call then gets the simulator's own 401).
func (g *restGate) sessionUser(r *http.Request) string {
	id := r.Header.Get("vmware-api-session-id")
	if id == "" {
		if c, err := r.Cookie("vmware-api-session-id"); err == nil {
			id = c.Value
		}
	}
	if id == "" {
		return ""
	}
	req := httptest.NewRequest(http.MethodGet, "/rest/com/vmware/cis/session", nil)
	req.Header.Set("vmware-api-session-id", id)
	rec := httptest.NewRecorder()
	g.vapi.ServeHTTP(rec, req)
	var res struct {
		Value struct {
			User string `json:"user"`
		} `json:"value"`
	}
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &res) != nil {
		return ""
	}
	return res.Value.User
}

func (g *restGate) privileges(r *http.Request, body []byte) []privilege {
	rest := strings.TrimPrefix(r.URL.Path, taggingPrefix)
	kind, id, _ := strings.Cut(rest, "/")
	action := r.URL.Query().Get("~action")
	global := func(p string) []privilege { return []privilege{{g.root, p}} }
	type object struct {
		Type  string `json:"type"`
		Value string `json:"id"`
	}
	var spec struct {
		ObjectID  *object  `json:"object_id"`
		ObjectIDs []object `json:"object_ids"`
	}
	attach := func() []privilege {
		_ = json.Unmarshal(body, &spec)
		needs := global("InventoryService.Tagging.AttachTag")
		if spec.ObjectID != nil {
			spec.ObjectIDs = append(spec.ObjectIDs, *spec.ObjectID)
		}
		for _, o := range spec.ObjectIDs {
			needs = append(needs, privilege{types.ManagedObjectReference{Type: o.Type, Value: o.Value}, "InventoryService.Tagging.ObjectAttachable"})
		}
		return needs
	}
	switch {
	case kind == "category" && id == "" && r.Method == http.MethodPost && action == "":
		return global("InventoryService.Tagging.CreateCategory")
	case kind == "category" && id != "" && r.Method == http.MethodDelete:
		return global("InventoryService.Tagging.DeleteCategory")
	case kind == "category" && id != "" && r.Method == http.MethodPatch:
		return global("InventoryService.Tagging.EditCategory")
	case kind == "tag" && id == "" && r.Method == http.MethodPost && action == "":
		return global("InventoryService.Tagging.CreateTag")
	case kind == "tag" && id != "" && r.Method == http.MethodDelete:
		return global("InventoryService.Tagging.DeleteTag")
	case kind == "tag" && id != "" && r.Method == http.MethodPatch:
		return global("InventoryService.Tagging.EditTag")
	case kind == "tag-association" && r.Method == http.MethodPost:
		switch action {
		case "attach", "detach", "attach-tag-to-multiple-objects", "detach-tag-from-multiple-objects",
			"attach-multiple-tags-to-object", "detach-multiple-tags-from-object":
			return attach()
		}
	}
	return nil
}

// ---------------------------------------------------------------- tags

// tagStore is the part of the vAPI simulator's handler this helper uses (its exported
// tag-manager methods and its embedded mutex, which guards the tag maps).
type tagStore interface {
	TryLock() bool
	Lock()
	Unlock()
	AttachedTags(types.ManagedObjectReference) ([]string, types.BaseMethodFault)
	DetachTag(types.ManagedObjectReference, string) types.BaseMethodFault
}

// tagJanitor removes an object's tag associations when the object leaves the inventory,
// as vCenter does; vcsim keeps them (vapi/simulator/simulator.go has no removal hook).
type tagJanitor struct {
	tags tagStore
}

var janitorRef = types.ManagedObjectReference{Type: "VcfmTagJanitor", Value: "tag-janitor"}

var taggable = map[string]bool{
	"VirtualMachine": true, "Folder": true, "Datacenter": true, "ClusterComputeResource": true,
	"ComputeResource": true, "HostSystem": true, "ResourcePool": true, "VirtualApp": true,
	"Datastore": true, "StoragePod": true, "Network": true, "OpaqueNetwork": true,
	"DistributedVirtualPortgroup": true, "VmwareDistributedVirtualSwitch": true, "DistributedVirtualSwitch": true,
}

func (j *tagJanitor) Reference() types.ManagedObjectReference                               { return janitorRef }
func (j *tagJanitor) PutObject(*simulator.Context, mo.Reference)                            {}
func (j *tagJanitor) UpdateObject(*simulator.Context, mo.Reference, []types.PropertyChange) {}

func (j *tagJanitor) RemoveObject(_ *simulator.Context, ref types.ManagedObjectReference) {
	if !taggable[ref.Type] {
		return
	}
	detach := func() {
		defer j.tags.Unlock()
		ids, _ := j.tags.AttachedTags(ref)
		for _, id := range ids {
			_ = j.tags.DetachTag(ref, id)
		}
	}
	// Synchronously whenever possible, so the association is gone when Destroy_Task
	// completes. The lock is held during each REST call; one of those (content library)
	// may itself destroy VMs through SOAP, so never wait for it here.
	if j.tags.TryLock() {
		detach()
		return
	}
	go func() { j.tags.Lock(); detach() }()
}

// ---------------------------------------------------------------- TLS

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
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, "", err
	}
	// Leaf is read by the vAPI simulator's certificate-authority endpoint.
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	if err := os.WriteFile(filepath.Join(dir, "server.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, "", err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, caFile, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

func loadCA(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
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
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}
