package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/apikey"
)

// The `keys` command group: create, list, update, revoke and roll API keys through the admin JSON API
// (README, "The keys CLI"). Output contract, for people and scripts alike:
//
//   - success: exit status 0; what a script wants (the secret, the table, the JSON) on
//     standard output, and for create and roll a human summary on standard error;
//   - any refusal (bad flag, missing token, API error, unreachable endpoint): exit status 1
//     and exactly one line on standard error, "keygate keys <sub>: <message>", nothing on
//     standard output. No usage dump.
//
// The admin token comes only from NORA_ADMIN_TOKEN: a flag would leave it in the shell
// history and in ps.

const (
	envToken        = "NORA_ADMIN_TOKEN"
	envAdminURL     = "NORA_ADMIN_URL"
	defaultAdminURL = "http://localhost:9180"
	// maxGrace mirrors the API's limit on expire_old_in_seconds.
	maxGrace = admin.MaxGrace * time.Second
	// listPageSize is the page size used when paging through a whole list (the API's max).
	listPageSize = 1000
)

const keysLong = `
Creates, lists, updates, revokes and rolls the API keys of a Nora instance by calling
keygate's admin endpoint (the nora_admin site, not Caddy's :2019 admin API).

The admin token is read from the NORA_ADMIN_TOKEN environment variable only
(never a flag, so it stays out of shell history and ps). The endpoint is
--admin URL, else $NORA_ADMIN_URL, else http://localhost:9180.

  keygate keys create --instance ID --name NAME [--expires DATE]
                      [--scope S]... [--allow-ip CIDR]... [--meta NAME=VALUE]...
                      [--rate-limit N/DURATION] [--quota N/day|month|total]
      Prints only the new secret on stdout (a summary goes to stderr). The
      secret is shown once. DATE is YYYY-MM-DD (the key stops at 00:00 UTC
      that day; tomorrow at the earliest) or an RFC 3339 time. --scope limits
      the key to routes requiring those scopes (charges:read, charges:*),
      --allow-ip to those client addresses or CIDR prefixes; --meta attaches
      metadata passed upstream. Each may be repeated. --rate-limit allows at
      most N requests per DURATION across all gateways (100/1s, 1000/1m, 50/s;
      1 to 1000000 per 1s to 24h); --quota at most N successful requests per
      UTC day, per UTC month or in total (100000/month).

  keygate keys update --instance ID KEY_ID [--name NAME] [--expires DATE|never]
                      [--scope S]... | [--no-scopes]
                      [--allow-ip CIDR]... | [--any-ip]
                      [--meta NAME=VALUE]... | [--no-meta]
                      [--rate-limit N/DURATION] | [--no-rate-limit]
                      [--quota N/day|month|total] | [--no-quota]
      Changes only what is given: --scope and --allow-ip replace the whole
      list, --meta the whole metadata; --no-scopes, --any-ip and --no-meta
      lift the restriction or clear the metadata; --no-rate-limit and
      --no-quota remove the limit. Prints the key.

  keygate keys list --instance ID [--status active|expired|revoked]
                    [--limit N [--starting-after KEY_ID]]
      A table of the instance's keys, newest first; all of them, page after
      page, unless --limit asks for one page. RESTRICTED counts a key's
      scopes and allowed addresses ("-": none); LIMITS shows its rate limit
      (100/1s) and its quota use (1234/10000 today, this month or in total).

  keygate keys revoke --instance ID KEY_ID
      Prints "revoked KEY_ID (name) — confirmed by M of N gateways".
      Revoking a revoked key succeeds.

  keygate keys roll --instance ID KEY_ID [--grace DURATION]
      Replaces the key with a new one (same name and expiry) and prints the
      new secret like create. The old key keeps working for DURATION (a Go
      duration such as 30m or 24h; default 0: it stops at once; at most 168h).

  keygate keys usage --instance ID KEY_ID [--since 24h]
                     [--granularity minute|hour|day]
      A table of the key's requests per minute, hour or day over the span:
      let through (OK) and refused, by error code, then the totals. --since
      is a duration (90m, 48h) or days (7d), at most 90d; the granularity
      follows it unless given (minutes up to 2h, hours up to 7d, then days).

With --json, each command prints the API's JSON object instead (create and
roll: the key object including "secret"; list: one list object; usage: the
usage object).

Exit status: 0 on success; 1 on any refusal, with one line on stderr.
`

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "keys",
		Usage: "<create|list|update|revoke|roll|usage> [--admin <url>] [--json] [flags]",
		Short: "Creates, lists, updates, revokes and rolls API keys, and shows their usage (admin endpoint)",
		Long:  keysLong,
		CobraFunc: func(cmd *cobra.Command) {
			(&keysCLI{getenv: os.Getenv, stdout: os.Stdout, stderr: os.Stderr}).setup(cmd)
		},
	})
}

// runKeys runs `keys` with args (what follows "keys" on the command line) and returns the
// exit status. It is the whole command without a process: the tests drive it.
func runKeys(args []string, env map[string]string, stdout, stderr io.Writer) int {
	c := &keysCLI{getenv: func(k string) string { return env[k] }, stdout: stdout, stderr: stderr}
	return c.run(args)
}

// keysCLI is one `keys` command tree and what it needs from its surroundings.
type keysCLI struct {
	getenv         func(string) string
	stdout, stderr io.Writer
	// now is the clock for summaries (default time.Now).
	now func() time.Time
	// http is the client for the admin API (nil: the admin package's default, 30 s).
	http *http.Client
	// pageSize is the page size when listing everything (0: listPageSize).
	pageSize int

	root *cobra.Command

	// flags
	adminURL string
	json     bool
}

// run builds a fresh tree with `keys` at its root and executes it.
func (c *keysCLI) run(args []string) int {
	root := &cobra.Command{Use: "keys"}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.SetArgs(args)
	c.setup(root)
	if err := root.Execute(); err != nil {
		if !errors.Is(err, errReported) {
			// Every path reports its own error; this is a safety net.
			c.report(root, err)
		}
		return 1
	}
	return 0
}

// errReported is returned once the error line has been written: cobra and caddycmd.Main
// print nothing more (SilenceErrors, SilenceUsage) and Main exits with status 1.
var errReported = errors.New("keygate keys: error reported")

// report writes the one error line for cmd.
func (c *keysCLI) report(cmd *cobra.Command, err error) error {
	where := "keygate keys"
	if cmd != nil && cmd != c.root {
		where += " " + cmd.Name()
	}
	fmt.Fprintf(c.stderr, "%s: %s\n", where, oneLine(err.Error()))
	return errReported
}

// setup turns keys (Caddy's command, or a fresh root in run) into the command group: the
// flags every subcommand shares, then one subcommand per function below.
func (c *keysCLI) setup(keys *cobra.Command) {
	c.root = keys
	if c.now == nil {
		c.now = time.Now
	}
	keys.SilenceErrors = true
	keys.SilenceUsage = true
	keys.Args = cobra.ArbitraryArgs
	keys.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return c.report(cmd, err) })
	pf := keys.PersistentFlags()
	pf.StringVar(&c.adminURL, "admin", "", "admin endpoint URL (default $"+envAdminURL+", else "+defaultAdminURL+")")
	pf.BoolVar(&c.json, "json", false, "print the API's JSON instead of text for people")
	keys.RunE = func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) == 0:
			return cmd.Help()
		case args[0] == "help":
			if sub, _, err := cmd.Find(args[1:]); err == nil && sub != cmd {
				return sub.Help()
			}
			return cmd.Help()
		}
		return c.report(cmd, fmt.Errorf("unknown command %q (create, list, update, revoke, roll or usage; see --help)", args[0]))
	}
	keys.AddCommand(c.createCmd(), c.listCmd(), c.updateCmd(), c.revokeCmd(), c.rollCmd(), c.usageCmd())
}

// subcommand finishes cmd as a `keys` subcommand: errors and usage are not printed by cobra
// (run's error becomes the one line on standard error), and every subcommand takes
// --instance, into *instance.
func (c *keysCLI) subcommand(cmd *cobra.Command, instance *string, run func(cmd *cobra.Command, args []string) error) *cobra.Command {
	cmd.SilenceErrors = true
	cmd.SilenceUsage = true
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := run(cmd, args); err != nil {
			if errors.Is(err, errReported) {
				return err
			}
			return c.report(cmd, err)
		}
		return nil
	}
	cmd.Flags().StringVar(instance, "instance", "", "instance id (required)")
	return cmd
}

// createCmd is `keys create`: the secret alone on standard output.
func (c *keysCLI) createCmd() *cobra.Command {
	var instance, name, expires string
	var r restrictionFlags
	var l limitFlags
	cmd := c.subcommand(&cobra.Command{
		Use:   "create --instance ID --name NAME [--expires DATE] [--scope S]... [--allow-ip CIDR]... [--meta NAME=VALUE]... [--rate-limit N/DURATION] [--quota N/PERIOD]",
		Short: "Creates a key and prints its secret (shown once)",
		Long: `Creates an API key in an instance. Only the secret goes to standard output
(with --json: the key object including "secret"); a summary goes to standard
error. The secret is shown once and cannot be retrieved later.`,
	}, &instance, func(cmd *cobra.Command, args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if err := required("instance", instance); err != nil {
			return err
		}
		if err := required("name", name); err != nil {
			return err
		}
		nk := admin.NewKey{Name: name, ExpiresAt: strings.TrimSpace(expires)}
		var err error
		if nk.Scopes, err = r.scopes(); err != nil {
			return err
		}
		if nk.AllowedIPs, err = r.allowedIPs(); err != nil {
			return err
		}
		if nk.Metadata, err = r.metadata(); err != nil {
			return err
		}
		if nk.RateLimit, err = l.rate(); err != nil {
			return err
		}
		if nk.Quota, err = l.quotaValue(); err != nil {
			return err
		}
		client, err := c.client()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		k, err := client.CreateKeyWith(ctx, instance, nk)
		if err != nil {
			return c.apiProblem(err)
		}
		return c.printSecret(k, func(w io.Writer) {
			fmt.Fprintf(w, "Created %s %q in %s (%s).\n", k.ID, clean(k.Name), k.Instance, k.Environment)
			c.keyDetails(w, k)
		})
	})
	cmd.Flags().StringVar(&name, "name", "", "key name, 1 to 100 characters (required)")
	cmd.Flags().StringVar(&expires, "expires", "", "expiry: YYYY-MM-DD (00:00 UTC that day) or RFC 3339; default never")
	r.add(cmd, false)
	l.add(cmd, false)
	return cmd
}

// listCmd is `keys list`: every key (page after page), or one page with --limit.
func (c *keysCLI) listCmd() *cobra.Command {
	var instance, status, startingAfter string
	var limit int
	cmd := c.subcommand(&cobra.Command{
		Use:   "list --instance ID [--status S] [--limit N [--starting-after KEY_ID]]",
		Short: "Lists an instance's keys, newest first",
		Long: `Lists an instance's keys, newest first: a table for people, or with --json
one list object. Without --limit, every page is fetched and printed (the JSON
is then one list with "has_more": false). With --limit N, one page of N keys
(1 to 1000) is printed; --starting-after KEY_ID starts it after that key.`,
	}, &instance, func(cmd *cobra.Command, args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if err := required("instance", instance); err != nil {
			return err
		}
		paged := cmd.Flags().Changed("limit")
		if paged && (limit < 1 || limit > 1000) {
			return fmt.Errorf("--limit must be from 1 to 1000 (got %d)", limit)
		}
		if startingAfter != "" && !paged {
			return errors.New("--starting-after needs --limit (without it, every key is listed)")
		}
		client, err := c.client()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var page admin.List[admin.Key]
		if paged {
			page, err = client.ListKeys(ctx, instance, limit, startingAfter, status)
		} else {
			page, err = c.listAll(ctx, client, instance, status)
		}
		if err != nil {
			return c.apiProblem(err)
		}
		if c.json {
			return c.printJSON(page)
		}
		if len(page.Data) == 0 {
			what := "keys"
			if status != "" {
				what = status + " keys"
			}
			fmt.Fprintf(c.stderr, "No %s in %s.\n", clean(what), clean(instance))
			return nil
		}
		if err := writeKeyTable(c.stdout, page.Data); err != nil {
			return fmt.Errorf("writing the table: %v", err)
		}
		if page.HasMore {
			last := page.Data[len(page.Data)-1].ID
			fmt.Fprintf(c.stderr, "More keys follow: add --starting-after %s for the next page.\n", last)
		}
		return nil
	})
	cmd.Flags().StringVar(&status, "status", "", "only keys with this status: active, expired or revoked")
	cmd.Flags().IntVar(&limit, "limit", 0, "print one page of at most N keys (1 to 1000) instead of all")
	cmd.Flags().StringVar(&startingAfter, "starting-after", "", "with --limit: start the page after this key id")
	return cmd
}

// revokeCmd is `keys revoke`.
func (c *keysCLI) revokeCmd() *cobra.Command {
	var instance string
	return c.subcommand(&cobra.Command{
		Use:   "revoke --instance ID KEY_ID",
		Short: "Revokes a key at once",
		Long: `Revokes a key: every gateway refuses it within a second. Prints
"revoked KEY_ID (name) — confirmed by M of N gateways" (with --json: the key
object, with its propagation): the call waits, at most a second, until every
live gateway has applied the revocation; a gateway that has not (frozen, or cut
off from the store) is named on standard error. Revoking a key that is already
revoked succeeds and changes nothing.`,
	}, &instance, func(cmd *cobra.Command, args []string) error {
		id, err := oneKeyID(args)
		if err != nil {
			return err
		}
		if err := required("instance", instance); err != nil {
			return err
		}
		client, err := c.client()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		k, err := client.RevokeKey(ctx, instance, id)
		if err != nil {
			return c.apiProblem(err)
		}
		if c.json {
			return c.printJSON(k)
		}
		if p := k.Propagation; p != nil {
			noun := "gateways"
			if p.Gateways == 1 {
				noun = "gateway"
			}
			_, err = fmt.Fprintf(c.stdout, "revoked %s (%s) — confirmed by %d of %d %s\n", k.ID, clean(k.Name), p.Confirmed, p.Gateways, noun)
			for _, g := range p.Missing {
				fmt.Fprintf(c.stderr, "not confirmed by gateway %s (%s) within a second\n", g.ID, clean(g.Hostname))
			}
			return err
		}
		_, err = fmt.Fprintf(c.stdout, "revoked %s (%s)\n", k.ID, clean(k.Name))
		return err
	})
}

// rollCmd is `keys roll`: the new secret on standard output, like create.
func (c *keysCLI) rollCmd() *cobra.Command {
	var instance, grace string
	cmd := c.subcommand(&cobra.Command{
		Use:   "roll --instance ID KEY_ID [--grace DURATION]",
		Short: "Replaces a key by a new one and prints the new secret",
		Long: `Replaces a key by a new one with the same name and expiry. The new secret
goes to standard output like create's (with --json: the new key object
including "secret"). The old key keeps working for the --grace DURATION (a Go
duration: 30m, 24h; default 0, it stops at once; at most 168h).`,
	}, &instance, func(cmd *cobra.Command, args []string) error {
		id, err := oneKeyID(args)
		if err != nil {
			return err
		}
		if err := required("instance", instance); err != nil {
			return err
		}
		g, err := parseGrace(grace)
		if err != nil {
			return err
		}
		client, err := c.client()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		start := c.now()
		k, err := client.RollKey(ctx, instance, id, int64(g/time.Second))
		if err != nil {
			return c.apiProblem(err)
		}
		return c.printSecret(k, func(w io.Writer) {
			fmt.Fprintf(w, "Rolled %s into %s %q in %s (%s).\n", id, k.ID, clean(k.Name), k.Instance, k.Environment)
			c.keyDetails(w, k)
			if g == 0 {
				fmt.Fprintf(w, "The old key %s no longer works.\n", id)
			} else {
				fmt.Fprintf(w, "The old key %s keeps working until about %s (grace %s).\n", id, fmtInstant(start.Add(g)), fmtDuration(g))
			}
		})
	})
	cmd.Flags().StringVar(&grace, "grace", "0", "how long the old key keeps working: a Go duration such as 30m or 24h (0 to 168h)")
	return cmd
}

// client returns an admin client for the resolved URL and the token from the environment.
func (c *keysCLI) client() (*admin.Client, error) {
	token := strings.TrimSpace(c.getenv(envToken))
	if token == "" {
		return nil, errors.New(envToken + " is not set")
	}
	u := strings.TrimSpace(c.adminURL)
	if u == "" {
		u = strings.TrimSpace(c.getenv(envAdminURL))
	}
	if u == "" {
		u = defaultAdminURL
	}
	return &admin.Client{BaseURL: u, Token: token, HTTP: c.http}, nil
}

// apiProblem words an API refusal for the one error line.
func (c *keysCLI) apiProblem(err error) error {
	var ae *admin.Error
	if errors.As(err, &ae) && ae.Code == "unauthorized" {
		return fmt.Errorf("the admin endpoint refused the token in %s (unauthorized)", envToken)
	}
	return err
}

// listAll pages through every key of an instance (newest first) into one list.
func (c *keysCLI) listAll(ctx context.Context, client *admin.Client, instance, status string) (admin.List[admin.Key], error) {
	size := c.pageSize
	if size <= 0 {
		size = listPageSize
	}
	all := admin.List[admin.Key]{Object: "list", Data: []admin.Key{}}
	after := ""
	for {
		page, err := client.ListKeys(ctx, instance, size, after, status)
		if err != nil {
			return admin.List[admin.Key]{}, err
		}
		all.Data = append(all.Data, page.Data...)
		if !page.HasMore {
			return all, nil
		}
		if len(page.Data) == 0 || page.Data[len(page.Data)-1].ID == after {
			return admin.List[admin.Key]{}, errors.New("the admin endpoint said more keys follow but gave none")
		}
		after = page.Data[len(page.Data)-1].ID
	}
}

// printSecret prints a new key: its secret alone on stdout (or the key object with --json),
// then the human summary on stderr. A failed write of the secret is an error that names
// the key, so it can be revoked: the secret cannot be shown again.
func (c *keysCLI) printSecret(k admin.Key, summary func(w io.Writer)) error {
	if c.json {
		if err := c.printJSON(k); err != nil {
			return fmt.Errorf("%v; key %s was created but its secret is lost: revoke it", err, k.ID)
		}
		return nil
	}
	if _, err := fmt.Fprintln(c.stdout, k.Secret); err != nil {
		return fmt.Errorf("writing the secret: %v; key %s was created but its secret is lost: revoke it", err, k.ID)
	}
	summary(c.stderr)
	fmt.Fprintln(c.stderr, "The secret (on standard output) is shown only once: store it now, it cannot be retrieved later.")
	return nil
}

func (c *keysCLI) keyDetails(w io.Writer, k admin.Key) {
	fmt.Fprintf(w, "  key:     %s\n", maskPrefix(k.Prefix))
	fmt.Fprintf(w, "  expires: %s\n", fmtExpiry(k.ExpiresAt))
	fmt.Fprintf(w, "  scopes:  %s\n", fmtList(k.Scopes, "any route"))
	fmt.Fprintf(w, "  from:    %s\n", fmtList(k.AllowedIPs, "any address"))
	fmt.Fprintf(w, "  meta:    %s\n", fmtMetadata(k.Metadata))
	rate, quota := limitDetails(k)
	fmt.Fprintf(w, "  rate:    %s\n", rate)
	fmt.Fprintf(w, "  quota:   %s\n", quota)
}

func (c *keysCLI) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("writing the JSON: %v", err)
	}
	return nil
}

// writeKeyTable writes keys as a table for people. Secrets are never part of it: only the
// masked prefix.
func writeKeyTable(w io.Writer, keys []admin.Key) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tKEY\tSTATUS\tEXPIRES\tCREATED\tLAST USED\tRESTRICTED\tLIMITS")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", clean(k.ID), clean(k.Name), maskPrefix(k.Prefix),
			clean(k.Status), fmtExpiry(k.ExpiresAt), fmtInstant(deref(k.CreatedAt)), fmtLastUsed(k.LastUsedAt), fmtRestricted(k), clean(fmtLimits(k)))
	}
	return tw.Flush()
}

// maskPrefix shows a key's prefix as the page does: "sk_live_abc123…".
func maskPrefix(prefix string) string { return apikey.Mask(clean(prefix)) }

// fmtExpiry shows an expiry: "Never", a date when it falls at 00:00 UTC (how expiries are
// given), else the instant.
func fmtExpiry(t *time.Time) string {
	if t == nil {
		return "Never"
	}
	u := t.UTC()
	if u.Hour() == 0 && u.Minute() == 0 && u.Second() == 0 && u.Nanosecond() == 0 {
		return u.Format("2006-01-02")
	}
	return fmtInstant(u)
}

func fmtLastUsed(t *time.Time) string {
	if t == nil {
		return "Never"
	}
	return fmtInstant(*t)
}

func fmtInstant(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// fmtDuration writes 24h rather than 24h0m0s.
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// parseGrace reads --grace: a Go duration from 0 to 168h, in whole seconds (the API's unit).
func parseGrace(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("--grace %q is not a duration: use a Go duration such as 30m, 24h or 168h", s)
	}
	switch {
	case d < 0:
		return 0, fmt.Errorf("--grace must not be negative (got %s)", s)
	case d > maxGrace:
		return 0, fmt.Errorf("--grace must be at most 168h (seven days); got %s", s)
	case d%time.Second != 0:
		return 0, fmt.Errorf("--grace must be a whole number of seconds (got %s)", s)
	}
	return d, nil
}

func required(flag, value string) error {
	if strings.TrimSpace(value) == "" {
		return fmt.Errorf("--%s is required", flag)
	}
	return nil
}

func noArgs(args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected argument %q (this command takes only flags)", args[0])
	}
	return nil
}

func oneKeyID(args []string) (string, error) {
	switch len(args) {
	case 0:
		return "", errors.New("the KEY_ID argument is required")
	case 1:
		return args[0], nil
	}
	return "", fmt.Errorf("one KEY_ID is expected, got %d arguments", len(args))
}

// clean makes a value from the API safe to print on a terminal: no control characters (no
// escape sequences, no line breaks) and no bidirectional overrides.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || (r >= '\u202a' && r <= '\u202e') || (r >= '\u2066' && r <= '\u2069') {
			return '\uFFFD'
		}
		return r
	}, s)
}

// oneLine keeps an error message on one line.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)), " ")
	if s == "" {
		s = "failed"
	}
	return s
}
