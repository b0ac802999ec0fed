package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/store"
)

// restrictionFlags are the flags that restrict a key (create and update), checked here
// with the API's own rules so that a bad value is refused before anything is sent.
type restrictionFlags struct {
	scope, allowIP, meta    []string
	noScopes, anyIP, noMeta bool
	cmd                     *cobra.Command
	withClear               bool
}

// add declares the flags on cmd; withClear adds --no-scopes, --any-ip and --no-meta.
func (r *restrictionFlags) add(cmd *cobra.Command, withClear bool) {
	r.cmd, r.withClear = cmd, withClear
	f := cmd.Flags()
	// StringArray, not StringSlice: a value is never split at commas (metadata may hold them).
	f.StringArrayVar(&r.scope, "scope", nil, "limit the key to this scope, e.g. charges:read or charges:* (repeat for more)")
	f.StringArrayVar(&r.allowIP, "allow-ip", nil, "accept the key only from this address or CIDR prefix (repeat for more)")
	f.StringArrayVar(&r.meta, "meta", nil, "metadata NAME=VALUE passed upstream with the key's requests (repeat for more)")
	if withClear {
		f.BoolVar(&r.noScopes, "no-scopes", false, "lift the scope restriction: the key may call any route")
		f.BoolVar(&r.anyIP, "any-ip", false, "lift the address restriction: the key works from any address")
		f.BoolVar(&r.noMeta, "no-meta", false, "remove all metadata")
	}
}

func (r *restrictionFlags) changed(name string) bool { return r.cmd.Flags().Changed(name) }

// scopes returns the --scope values (nil when none was given).
func (r *restrictionFlags) scopes() ([]string, error) {
	if r.noScopes && r.changed("scope") {
		return nil, errors.New("--scope and --no-scopes cannot be used together")
	}
	if len(r.scope) == 0 {
		return nil, nil
	}
	list := make([]string, len(r.scope))
	for i, s := range r.scope {
		list[i] = strings.TrimSpace(s)
	}
	if err := store.CheckScopes(list); err != nil {
		return nil, fmt.Errorf("--scope: %v", err)
	}
	return list, nil
}

// allowedIPs returns the --allow-ip values (nil when none was given).
func (r *restrictionFlags) allowedIPs() ([]string, error) {
	if r.anyIP && r.changed("allow-ip") {
		return nil, errors.New("--allow-ip and --any-ip cannot be used together")
	}
	if len(r.allowIP) == 0 {
		return nil, nil
	}
	list := make([]string, len(r.allowIP))
	for i, s := range r.allowIP {
		list[i] = strings.TrimSpace(s)
	}
	if _, err := store.ParseAllowedIPs(list); err != nil {
		return nil, fmt.Errorf("--allow-ip: %v", err)
	}
	return list, nil
}

// metadata returns the --meta values (nil when none was given).
func (r *restrictionFlags) metadata() (map[string]string, error) {
	if r.noMeta && r.changed("meta") {
		return nil, errors.New("--meta and --no-meta cannot be used together")
	}
	if len(r.meta) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(r.meta))
	for _, kv := range r.meta {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("--meta %q is not NAME=VALUE", clip(kv))
		}
		if _, dup := m[name]; dup {
			return nil, fmt.Errorf("--meta %s is given twice", clip(name))
		}
		m[name] = value
	}
	if err := store.CheckMetadata(m); err != nil {
		return nil, fmt.Errorf("--meta: %v", err)
	}
	return m, nil
}

// updateCmd is `keys update`: changes what its flags name, prints the key.
func (c *keysCLI) updateCmd() *cobra.Command {
	var instance, name, expires string
	var r restrictionFlags
	var l limitFlags
	cmd := c.subcommand(&cobra.Command{
		Use:   "update --instance ID KEY_ID [--name N] [--expires DATE|never] [--scope S]... [--no-scopes] [--allow-ip CIDR]... [--any-ip] [--meta NAME=VALUE]... [--no-meta] [--rate-limit N/DURATION] [--no-rate-limit] [--quota N/PERIOD] [--no-quota]",
		Short: "Changes a key's name, expiry, scopes, allowed addresses, metadata or limits",
		Long: `Changes only what the flags name; the rest stays as it is. --scope, --allow-ip
and --meta replace the whole list (or the whole metadata), each repeated for
more values; --no-scopes, --any-ip and --no-meta lift the restriction or remove
the metadata; --rate-limit and --quota set a limit, --no-rate-limit and
--no-quota remove it; --expires never removes the expiry. Every gateway enforces the
change within the revocation bound. Prints "updated KEY_ID (name)" and the
key's details (with --json: the key object). A revoked key cannot be changed.`,
	}, &instance, func(cmd *cobra.Command, args []string) error {
		id, err := oneKeyID(args)
		if err != nil {
			return err
		}
		if err := required("instance", instance); err != nil {
			return err
		}
		var ch admin.KeyChanges
		if cmd.Flags().Changed("name") {
			if strings.TrimSpace(name) == "" {
				return errors.New("--name must not be empty")
			}
			ch.Name = &name
		}
		if cmd.Flags().Changed("expires") {
			e := strings.TrimSpace(expires)
			switch {
			case e == "":
				return errors.New("--expires must be a date (YYYY-MM-DD), an RFC 3339 time or never")
			case strings.EqualFold(e, "never"):
				e = ""
			}
			ch.ExpiresAt = &e
		}
		scopes, err := r.scopes()
		if err != nil {
			return err
		}
		if scopes != nil || r.noScopes {
			ch.Scopes = &scopes
		}
		ips, err := r.allowedIPs()
		if err != nil {
			return err
		}
		if ips != nil || r.anyIP {
			ch.AllowedIPs = &ips
		}
		meta, err := r.metadata()
		if err != nil {
			return err
		}
		if meta != nil || r.noMeta {
			ch.Metadata = &meta
		}
		rate, err := l.rate()
		if err != nil {
			return err
		}
		if rate != nil || l.noRateLimit {
			ch.RateLimit = &rate
		}
		quota, err := l.quotaValue()
		if err != nil {
			return err
		}
		if quota != nil || l.noQuota {
			ch.Quota = &quota
		}
		if ch == (admin.KeyChanges{}) {
			return errors.New("nothing to update: give --name, --expires, --scope, --no-scopes, --allow-ip, --any-ip, --meta, --no-meta, --rate-limit, --no-rate-limit, --quota or --no-quota")
		}
		client, err := c.client()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		k, err := client.UpdateKey(ctx, instance, id, ch)
		if err != nil {
			return c.apiProblem(err)
		}
		if c.json {
			return c.printJSON(k)
		}
		if _, err := fmt.Fprintf(c.stdout, "updated %s (%s)\n", k.ID, clean(k.Name)); err != nil {
			return err
		}
		c.keyDetails(c.stdout, k)
		return nil
	})
	cmd.Flags().StringVar(&name, "name", "", "new name, 1 to 100 characters")
	cmd.Flags().StringVar(&expires, "expires", "", "new expiry: YYYY-MM-DD (00:00 UTC that day), RFC 3339, or never")
	r.add(cmd, true)
	l.add(cmd, true)
	return cmd
}

// fmtRestricted is the RESTRICTED column: how many scopes and addresses limit the key.
func fmtRestricted(k admin.Key) string {
	var parts []string
	if n := len(k.Scopes); n > 0 {
		parts = append(parts, plural(n, "scope", "scopes"))
	}
	if n := len(k.AllowedIPs); n > 0 {
		parts = append(parts, plural(n, "ip", "ips"))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// fmtList shows a restriction list, or none when it is null.
func fmtList(list []string, none string) string {
	if len(list) == 0 {
		return none
	}
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = clean(s)
	}
	return strings.Join(out, ", ")
}

// fmtMetadata shows metadata as NAME=VALUE pairs, sorted by name.
func fmtMetadata(m map[string]string) string {
	if len(m) == 0 {
		return "none"
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	for i, k := range names {
		names[i] = clean(k) + "=" + clean(m[k])
	}
	return strings.Join(names, ", ")
}

// clip shortens a flag value before an error message repeats it.
func clip(s string) string {
	if r := []rune(s); len(r) > 40 {
		return string(r[:40]) + "…"
	}
	return s
}
