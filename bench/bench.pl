#!/usr/bin/perl

# The module's cost, measured as ratios against references taken in the
# same run: see docs/benchmarks.md.  Starts, on loopback and free ports,
# a Redis, an nginx standing in for the MDM server (fixed answers) and
# the nginx under test with the module and one worker; drives them with
# wrk and bench/wrk.lua; measures each row alternately with its
# reference; prints the table and writes it into docs/benchmarks.md.
#
#   perl bench/bench.pl [--rounds 5] [--seconds 3] [--connections 16]
#                       [--mixed 1000000] [--only ROW,...]
#                       [--report docs/benchmarks.md] [--no-report]
#                       [--perf ROW,...]
#
# ROW: pass-through pass-through-parse command challenge gettoken pairing
# isolation memory redis-memory scaling.  Generated inputs go in
# build/bench.  Every process it starts is stopped by its pid at the
# end, also on failure.  It fails (exit 1) when a row had answers it did
# not expect.  --perf records the worker with perf during the module's
# first round of the rows named, into build/bench/perf-ROW.data, and
# summarises it in build/bench/perf-ROW.txt.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../t/lib";

use Getopt::Long;
use MIME::Base64 qw(decode_base64);
use POSIX qw(ceil strftime);
use Time::HiRes qw(sleep time);

use MdmWatch::Message qw(machine_info sign checkin get_token
    command_result);
use MdmWatch::Test;

my %opt = (rounds => 5, seconds => 3, connections => 16,
           mixed => 1_000_000, mixed_limit => 300,
           report => "$FindBin::Bin/../docs/benchmarks.md",
           only => '', 'no-report' => 0, perf => '');
GetOptions(\%opt, 'rounds=i', 'seconds=f', 'connections=i', 'mixed=i',
    'mixed_limit=i', 'report=s', 'only=s', 'no-report', 'perf=s')
    or die "usage: see the head of $0\n";

my $TOP = $MdmWatch::Test::ROOT;
my $OUT = "$TOP/build/bench";
my $LUA = "$TOP/bench/wrk.lua";

my $WATCH = '00008301-0A1B2C3D4E5F6071';
my $PHONE = $MdmWatch::Test::PHONE;
my $DEVICE = '00008110-0011223344556677';
my $TOKEN_PREFIX = '00000000-0000-4000-8000-';
my $ST_KEY = 'mdm_watch:security_token:';
my $COMMAND_TYPE = 'application/x-apple-aspen-mdm';

# security tokens: the reference draws from [0, $REF_RANGE); each wrk
# run of the module gets a range of its own above it
my $REF_RANGE = 400_000;
my $next_range = 1_000_000;

# GetTokens per second, for the number of security tokens a run needs
my $gettoken_estimate = 50_000;

my %only = map { $_ => 1 } split /,/, $opt{only};
my %perf = map { $_ => 1 } split /,/, $opt{perf};
sub wanted { return !%only || $only{ $_[0] } }

my $t = MdmWatch::Test->new;
my $dir = $t->dir;
my $pki = $t->pki;
my %port = (upstream => $t->port('upstream'));

my (@rows, %figures);
my $failed = 0;

progress("inputs and tools in $OUT");
system('mkdir', '-p', $OUT) == 0 or die "mkdir $OUT\n";
my %input = make_inputs();
my $cms = build_cms();

progress('starting Redis, the upstream and nginx on 127.0.0.1');
$t->start_redis;
start_upstream();
start_module(1);
enroll_phone();
my @eval = capture_gettoken_eval();

my %rate;

if (wanted('pass-through')) {
    row('pass-through', 'TokenUpdate (1 KB) through mdm_watch_checkin',
        'the same through proxy_pass alone', 0.95,
        sub { wrk_fixed('/mdm/checkin', $input{token_update}, 200) },
        sub { wrk_fixed('/ref/checkin', $input{token_update}, 200) });
}

if (wanted('pass-through-parse')) {
    row('pass-through, parse only',
        'TokenUpdate (1 KB) of the user channel: parsed, nothing recorded',
        'the same through proxy_pass alone', 'report',
        sub { wrk_fixed('/mdm/checkin', $input{user_update}, 200) },
        sub { wrk_fixed('/ref/checkin', $input{user_update}, 200) });
}

# command results go to the ServerURL with a type of their own; here the
# ServerURL is the check-in location
if (wanted('command')) {
    row('command traffic', 'command report (application/x-apple-aspen-mdm)'
        . ' through mdm_watch_checkin',
        'the same through proxy_pass alone', 0.98,
        sub { wrk_fixed('/mdm/checkin', $input{command}, 200,
                        $COMMAND_TYPE) },
        sub { wrk_fixed('/ref/checkin', $input{command}, 200,
                        $COMMAND_TYPE) });
}

if (wanted('challenge') || wanted('pairing')) {
    row('challenge', 'first enrollment: signed machine info, 403',
        'CMS verification and plist parse in process, one core', 0.70,
        sub { wrk_fixed('/mdm/enroll/watch', $input{challenge}, 403,
                        $MdmWatch::Test::CMS_TYPE) },
        sub { cms_verify($input{challenge}) });
}

if (wanted('gettoken') || wanted('pairing')) {
    row('GetToken', 'valid GetToken, 200 with a pairing token',
        "redis-benchmark: the same EVAL, -c $opt{connections} -P 1", 0.50,
        sub { wrk_gettoken() },
        sub { redis_benchmark() });
}

pairing() if wanted('pairing');
isolation() if wanted('isolation');
memory() if wanted('memory');
redis_memory() if wanted('redis-memory');
scaling() if wanted('scaling');

$t->stop_all;

my $report = report();
print "\n$report";
write_report($report) unless $opt{'no-report'} || %only;

if ($failed) {
    print "bench: FAILED: answers that were not the expected ones, see"
        . " above\n";
    exit 1;
}
exit 0;


sub progress {
    printf "bench: %s %s\n", strftime('%H:%M:%S', gmtime), $_[0];
}

# --- inputs -------------------------------------------------------------

sub make_inputs {
    my %in;

    $in{challenge} = sign(machine_info(UDID => $WATCH), pki => $pki);

    # a TokenUpdate of 1 KB: its UnlockToken takes the rest
    my @update = (MessageType => 'TokenUpdate',
        Topic => 'com.apple.mgmt.External.0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0',
        UDID => $DEVICE, Token => \(pack 'H*', 'a1' x 32),
        PushMagic => '5B9A4E0C-2D1F-4A8B-9C3E-7F6D5A4B3C2D');
    my $short = length checkin(@update, UnlockToken => \'');
    my $pad = int((1024 - $short) / 4) * 3;
    $in{token_update} = checkin(@update, UnlockToken => \('u' x $pad));
    $in{token_update} .= ' ' x (1024 - length $in{token_update});

    # the same, of the user channel: parsed, but no device to record
    my $user_id = '<key>EnrollmentUserID</key><string>u</string>';
    (my $user = $in{token_update}) =~
        s{<key>UDID</key>\s*<string>[^<]*</string>}{$user_id};
    $user .= ' ' x (1024 - length $user);
    $in{user_update} = $user;

    $in{command} = command_result(udid => $DEVICE,
        command_uuid => '0E8A2F5C-9B4D-4C1E-8A7F-3D2C1B0A9F8E');

    $in{gettoken} = get_token(udid => $PHONE, watch_udid => $WATCH,
        security_token => "$TOKEN_PREFIX\@TOKEN\@");

    my %file;
    for my $k (keys %in) {
        $file{$k} = "$OUT/$k.body";
        MdmWatch::Test::spew($file{$k}, $in{$k});
    }
    return %file;
}

sub build_cms {
    my $tree = "$TOP/build/nginx";
    my $bin = "$OUT/cms";
    my @libs = split ' ', `pkg-config --libs libplist-2.0 libcrypto libssl`;
    my @inc = map { ('-I', "$tree/$_") } qw(src/core src/event
        src/event/modules src/os/unix objs src/http src/http/modules
        src/http/v2);

    die "bench: no configured nginx tree in $tree: run make first\n"
        unless -f "$tree/objs/ngx_auto_config.h";

    progress('building the reference program build/bench/cms (-O2)');
    run('gcc', '-O2', '-g', '-W', '-Wall', '-Wno-unused-parameter', @inc,
        '-I', "$TOP/ngx_mdm_watch_module", '-I', "$TOP/fuzz",
        "$TOP/bench/cms.c",
        map({ "$TOP/ngx_mdm_watch_module/ngx_http_mdm_watch_$_.c" }
            qw(cms plist plist_guard token)),
        "$TOP/fuzz/ngx_shim.c", @libs, '-o', $bin);
    return $bin;
}

sub run {
    my @cmd = @_;
    system(@cmd) == 0 or die "bench: $cmd[0] failed ($?)\n";
}

# --- servers ------------------------------------------------------------

sub start_upstream {
    my $profile = '<?xml version="1.0" encoding="UTF-8"?><plist version="1.0">'
        . '<dict><key>PayloadContent</key><string>';
    $profile .= 'p' x (4096 - length($profile) - 33);
    $profile .= '</string></dict></plist>';
    $profile .= ' ' x (4096 - length $profile);

    # nginx takes at most 4 KB in one word of its configuration
    my @part = unpack '(A1024)*', $profile;
    my $set = join '', map { "            set \$profile_$_ '$part[$_]';\n" }
        0 .. $#part;
    my $return = join '', map { "\$profile_$_" } 0 .. $#part;

    my $conf = <<"END";
worker_processes 1;
error_log $dir/upstream-error.log warn;
pid $dir/upstream.pid;

events {
}

http {
    access_log off;
    client_body_temp_path $dir/up_body_temp;
    proxy_temp_path $dir/up_proxy_temp;
    fastcgi_temp_path $dir/up_fastcgi_temp;
    uwsgi_temp_path $dir/up_uwsgi_temp;
    scgi_temp_path $dir/up_scgi_temp;
    keepalive_requests 1000000;

    server {
        listen 127.0.0.1:$port{upstream};

        location = /mdm/enroll/watch {
            default_type application/x-apple-aspen-config;
$set
            return 200 "$return";
        }

        location / {
            default_type text/plain;
            return 200 '';
        }
    }
}
END
    MdmWatch::Test::spew("$dir/upstream.conf", $conf);
    $t->spawn('upstream', "$dir/upstream.stderr",
        MdmWatch::Test::nginx_binary(), '-p', "$dir/",
        '-c', "$dir/upstream.conf", '-e', "$dir/upstream-error.log",
        '-g', 'daemon off;');
    $t->wait_port('upstream', $port{upstream})
        or die 'bench: the upstream nginx did not start: '
            . MdmWatch::Test::tail("$dir/upstream-error.log");
}

sub start_module {
    my ($workers) = @_;
    my $module = MdmWatch::Test::module_file();
    my $nginx_port = $t->port;
    my $redis_port = $t->port('redis');
    my $ca = $pki->ca_file;
    my $secret = $t->secret_file;

    my $conf = <<"END";
load_module $module;

worker_processes $workers;
error_log $dir/error.log warn;
pid $dir/nginx.pid;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path $dir/client_body_temp;
    proxy_temp_path $dir/proxy_temp;
    fastcgi_temp_path $dir/fastcgi_temp;
    uwsgi_temp_path $dir/uwsgi_temp;
    scgi_temp_path $dir/scgi_temp;
    keepalive_requests 1000000;

    mdm_watch_redis               127.0.0.1:$redis_port;
    mdm_watch_redis_timeout       1s;
    mdm_watch_secret              $secret;
    mdm_watch_token_ttl           1h;
    mdm_watch_trusted_certificate $ca;
    mdm_watch_verify_machine_info on;

    upstream mdm {
        server 127.0.0.1:$port{upstream};
        keepalive 32;
    }

    server {
        listen 127.0.0.1:$nginx_port;

        proxy_http_version 1.1;
        proxy_set_header Connection "";

        location = /mdm/enroll/watch {
            mdm_watch_enroll;
            proxy_set_header X-Paired-Phone-UDID \$mdm_watch_phone_udid;
            proxy_pass http://mdm;
        }

        location = /mdm/checkin {
            mdm_watch_checkin;
            proxy_pass http://mdm;
        }

        location = /ref/checkin {
            proxy_pass http://mdm;
        }

        location / {
            proxy_pass http://mdm;
        }
    }
}
END
    MdmWatch::Test::spew("$dir/nginx.conf", $conf);
    $t->start_nginx;
    my @workers = $t->wait_workers($workers);
    die "bench: nginx did not start $workers workers\n"
        unless @workers == $workers;
    return @workers;
}

sub restart_module {
    my ($workers) = @_;
    $t->stop_nginx;
    return start_module($workers);
}

# the phone of the GetTokens, recorded as the tests do: a TokenUpdate
# that the MDM server accepts, through the check-in location
sub enroll_phone {
    my $res = $t->checkin(MdmWatch::Message::token_update(udid => $PHONE));
    die "bench: the phone's TokenUpdate got $res->{status}\n"
        unless ($res->{status} // 0) == 200;
    $t->wait_device($PHONE)
        or die "bench: the module did not record the phone\n";
}

# security tokens of the watch, as the challenge script stores them
sub make_tokens {
    my ($first, $count) = @_;
    my $script = q{
        for i = tonumber(ARGV[1]), tonumber(ARGV[1]) + tonumber(ARGV[2]) - 1
        do
            redis.call('SET', ARGV[3] .. string.format('%012d', i), ARGV[4],
                       'EX', 3600)
        end
        return 1
    };
    $t->redis('EVAL', $script, 0, $first, $count, "$ST_KEY$TOKEN_PREFIX",
        $WATCH);
}

sub token_range {
    my ($count) = @_;
    my $first = $next_range;
    $next_range += $count;
    make_tokens($first, $count);
    return $first;
}

# the command the module sends Redis for one GetToken, as MONITOR shows it
sub capture_gettoken_eval {
    my $log = "$dir/monitor.log";
    my $pid = $t->spawn('monitor', $log, 'redis-cli', '-h', '127.0.0.1',
        '-p', $t->port('redis'), 'MONITOR');
    sleep 0.3;

    my $first = token_range(1);
    my $body = MdmWatch::Test::slurp($input{gettoken});
    $body =~ s/\@TOKEN\@/sprintf '%012d', $first/e;
    my $res = $t->checkin($body);
    sleep 0.3;
    $t->stop_process('monitor');

    die "bench: a GetToken got $res->{status}\n"
        unless ($res->{status} // 0) == 200;

    my @eval;
    for my $line (split /\n/, MdmWatch::Test::slurp($log)) {
        next unless $line =~ /^\S+ \[\d+ [^\]]+\] (.*)$/;
        my @args = monitor_args($1);
        next unless @args && uc $args[0] eq 'EVAL'
            && grep { index($_, $ST_KEY) == 0 } @args;
        @eval = @args;
    }
    die "bench: MONITOR showed no EVAL for the GetToken\n" unless @eval;

    my $n = grep { /^mdm_watch:/ } @eval;
    progress("a GetToken is one $eval[0] of a script with $eval[2] keys"
        . " ($n key arguments)");
    return @eval;
}

# the arguments of a MONITOR line: "..." strings with C escapes
sub monitor_args {
    my ($s) = @_;
    my @args;
    my %esc = (n => "\n", r => "\r", t => "\t", a => "\a", b => "\b",
               '"' => '"', '\\' => '\\');

    while ($s =~ /\G\s*"((?:[^"\\]|\\.)*)"/gc) {
        my $a = $1;
        $a =~ s/\\x([0-9a-fA-F]{2})|\\(.)/
            defined $1 ? chr hex $1 : $esc{$2} \/\/ $2/ge;
        push @args, $a;
    }
    return @args;
}

# --- measuring ----------------------------------------------------------

sub wrk {
    my (%o) = @_;
    my $seconds = $o{seconds} // $opt{seconds};
    my $connections = $o{connections} // $opt{connections};
    my $path = $o{path} // '/';
    my $env = $o{env};

    local @ENV{ keys %$env } = values %$env;
    my @cmd = ('wrk', '-t', 1, '-c', $connections, '-d', "${seconds}s",
        '--timeout', '5s', '-s', $LUA, 'http://127.0.0.1:' . $t->port
        . $path);

    my $out = `@{[ join ' ', map { "'$_'" } @cmd ]} 2>&1`;
    my ($line) = $out =~ /^(BENCH .*)$/m;
    die "bench: wrk printed no result:\n$out" unless $line;

    my %r = $line =~ /(\w+)=([\d.]+)/g;
    if ($r{bad} || $r{errors}) {
        $failed = 1;
        print "bench: unexpected answers: $line\n";
    }
    return \%r;
}

sub wrk_fixed {
    my ($path, $body, $expect, $type, %o) = @_;
    my $method = !$body ? 'GET' : $path =~ /enroll/ ? 'POST' : 'PUT';

    return wrk(%o, path => $path, env => {
        BENCH_MODE => 'fixed', BENCH_METHOD => $method,
        BENCH_PATH => $path, BENCH_EXPECT => $expect,
        ($body ? (BENCH_BODY => $body,
                  BENCH_TYPE => $type // $MdmWatch::Test::CHECKIN_TYPE)
               : ()),
    });
}

sub wrk_gettoken {
    my (%o) = @_;
    my $seconds = $o{seconds} // $opt{seconds};
    my $count = ceil($gettoken_estimate * $seconds * 2) + 1000;
    my $first = token_range($count);
    my $r = wrk(%o, path => '/mdm/checkin', env => {
        BENCH_MODE => 'gettoken', BENCH_GETTOKEN => $input{gettoken},
        BENCH_FIRST => $first, BENCH_SPAN => $count,
    });
    $gettoken_estimate = $r->{rate} if $r->{rate} > 1000;
    return $r;
}

sub cms_verify {
    my ($body) = @_;
    my $out = `$cms verify '@{[ $pki->ca_file ]}' '$body' $opt{seconds}`;
    die "bench: $cms verify failed\n"
        unless $out =~ /^verify (\d+) ([\d.]+) ([\d.]+)/;
    return { requests => $1, seconds => $2, rate => $3 };
}

sub redis_benchmark {
    my $n = ceil($REF_RANGE / 4);

    # every token of the range live again: about one request in nine
    # draws a token spent before, which takes the script's shorter path
    make_tokens(0, $REF_RANGE);

    my @args = @eval;
    for (@args) {
        s/^(\Q$ST_KEY$TOKEN_PREFIX\E)\d{12}$/${1}__rand_int__/;
        s/^(mdm_watch:pairing_token:[0-9a-f]{20})[0-9a-f]{12}$
         /${1}__rand_int__/x;
    }

    my $start = time;
    my $out = `@{[ join ' ', 'redis-benchmark', '-h', '127.0.0.1', '-p',
        $t->port('redis'), '-c', $opt{connections}, '-P', 1, '-n', $n,
        '-r', $REF_RANGE, '-q', map { shell_quote($_) } @args ]} 2>&1`;
    my $seconds = time - $start;
    my ($rate) = $out =~ /([\d.]+) requests per second/;
    die "bench: redis-benchmark printed no rate:\n$out" unless $rate;
    return { requests => $n, seconds => $seconds, rate => $rate };
}

sub shell_quote {
    my ($s) = @_;
    $s =~ s/'/'\\''/g;
    return "'$s'";
}

sub median {
    my @v = sort { $a <=> $b } @_;
    return undef unless @v;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

# a row: the module and its reference alternately, $opt{rounds} times
sub row {
    my ($name, $what, $ref_what, $target, $module, $reference) = @_;
    my (@m, @r);

    for my $round (1 .. $opt{rounds}) {
        my $perf = $round == 1 && $perf{$name} && perf_start($name);
        my $a = $module->();
        perf_stop($name, $perf) if $perf;
        my $b = $reference->();
        push @m, $a->{rate};
        push @r, $b->{rate};
        progress(sprintf '%-16s round %d: module %9.1f/s, reference'
            . ' %9.1f/s', $name, $round, $a->{rate}, $b->{rate});
    }

    my ($mm, $mr) = (median(@m), median(@r));
    $rate{$name} = [$mm, $mr];
    push @rows, {
        name => $name, what => $what, ref => $ref_what,
        module => sprintf('%.0f/s', $mm), reference => sprintf('%.0f/s', $mr),
        ratio => sprintf('%.2f', $mm / $mr),
        target => $target =~ /^[\d.]+$/ ? "≥ $target" : $target,
        met => $target !~ /^[\d.]+$/ ? ''
             : $mm / $mr >= $target ? 'met' : 'not met',
    };
}

sub perf_start {
    my ($name) = @_;
    my ($worker) = $t->worker_pids;
    (my $file = "$OUT/perf-$name") =~ s/ /-/g;

    return $t->spawn('perf', "$file.log", 'perf', 'record', '-F', 999,
        '--call-graph', 'dwarf,16384', '-p', $worker, '-o', "$file.data",
        '--', 'sleep', $opt{seconds});
}

sub perf_stop {
    my ($name) = @_;
    (my $file = "$OUT/perf-$name") =~ s/ /-/g;

    $t->reap('perf', $opt{seconds} + 10) // $t->stop_process('perf');
    system("perf report -i '$file.data' --stdio --no-children"
        . " --sort dso,symbol --percent-limit 0.5 -g none"
        . " > '$file.txt' 2>> '$file.log'");
    progress("perf of $name: $file.txt");
}

# challenge, GetToken and enrollment with a pairing token, in turn; the
# pairing tokens are minted by the module beforehand and signed into
# machine info here
sub pairing {
    my ($ch, $gt) = ($rate{challenge}[0], $rate{GetToken}[0]);
    my $expected = 1 / (2 / $ch + 1 / $gt) / 3;
    my $per_round = ceil($expected * 3 * $opt{seconds} * 1.6) + 200;
    my $total = $per_round * $opt{rounds};
    my @m;

    progress("pairing: minting $total pairing tokens through GetToken");
    my $first = token_range($total + 1000);
    wrk(seconds => ceil($total / $gettoken_estimate * 1.5) + 1,
        path => '/mdm/checkin', env => {
        BENCH_MODE => 'mint', BENCH_GETTOKEN => $input{gettoken},
        BENCH_FIRST => $first, BENCH_SPAN => $total + 1000,
        BENCH_COUNT => $total, BENCH_MINT => "$OUT/minted",
    });
    my @tokens = split /\n/, MdmWatch::Test::slurp("$OUT/minted.0");
    die "bench: minted " . @tokens . " pairing tokens of $total\n"
        if @tokens < $total;

    progress("pairing: signing $total machine infos with their tokens");
    for my $round (1 .. $opt{rounds}) {
        my $plists = '';
        for my $i (1 .. $per_round) {
            my $xml = machine_info(UDID => $WATCH,
                PAIRING_TOKEN => decode_base64(shift @tokens));
            $plists .= length($xml) . "\n$xml";
        }
        MdmWatch::Test::spew("$OUT/plists", $plists);
        run($cms, 'sign', $pki->cert('watch'), $pki->key('watch'),
            "$OUT/plists", "$OUT/enroll-$round.0");
    }

    for my $round (1 .. $opt{rounds}) {
        my $gt_count = $per_round + 1000;
        my $gt_first = token_range($gt_count);
        my $p = wrk(path => '/mdm/enroll/watch', env => {
            BENCH_MODE => 'pairing', BENCH_GETTOKEN => $input{gettoken},
            BENCH_FIRST => $gt_first, BENCH_SPAN => $gt_count,
            BENCH_CHALLENGE => $input{challenge},
            BENCH_ENROLL => "$OUT/enroll-$round",
        });
        my $pairings = ($p->{ok} // 0) / $p->{seconds};
        push @m, $pairings;
        progress(sprintf 'full pairing     round %d: %9.1f pairings/s'
            . ' (%d requests, %d profiles)', $round, $pairings,
            $p->{requests}, $p->{ok} // 0);
    }

    my $mm = median(@m);
    my $ref = 1 / (2 / $rate{challenge}[1] + 1 / $rate{GetToken}[1]);
    push @rows, {
        name => 'full pairing',
        what => 'challenge + GetToken + enrollment with token (4 KB profile),'
            . ' in pairings',
        ref => 'two CMS verifications and one GetToken script, from the'
            . ' references above',
        module => sprintf('%.0f/s', $mm), reference => sprintf('%.0f/s', $ref),
        ratio => sprintf('%.2f', $mm / $ref), target => 'report',
        met => '',
    };
}

# p99 of a plain location while GetTokens arrive at a bounded rate
# (16 connections, a request every 20 ms on each: at most 800 a second):
# with Redis stopped (SIGSTOP), against the same with Redis healthy
sub isolation {
    my (@healthy, @stalled);
    my $redis = $t->{pids}{redis};

    for my $round (1 .. $opt{rounds}) {
        my $h = isolation_round(0);
        my $s = isolation_round($redis);

        push @healthy, $h->{p99_us};
        push @stalled, $s->{p99_us};
        progress(sprintf 'isolation        round %d: p99 %d us healthy,'
            . ' %d us with Redis stopped', $round, $h->{p99_us},
            $s->{p99_us});
    }

    my ($h, $s) = (median(@healthy), median(@stalled));
    push @rows, {
        name => 'isolation',
        what => 'p99 of GET / (proxy_pass) with Redis stopped, GetTokens'
            . ' arriving (800/s at most)',
        ref => 'p99 of the same with Redis healthy',
        module => sprintf('%.2f ms', $s / 1000),
        reference => sprintf('%.2f ms', $h / 1000),
        ratio => sprintf('%.2f', $s / $h), target => '≤ 1.5',
        met => $s / $h <= 1.5 ? 'met' : 'not met',
    };
}

# one measure of GET / under the GetToken load; $stop: the pid of Redis
# to stop meanwhile, or 0
sub isolation_round {
    my ($stop) = @_;
    my $count = 200_000;
    my $first = token_range($count);

    local @ENV{qw(BENCH_MODE BENCH_GETTOKEN BENCH_FIRST BENCH_SPAN
                  BENCH_DELAY)} =
        ('gettoken', $input{gettoken}, $first, $count, 20);
    $t->spawn('gettoken', "$dir/isolation-gettoken.log", 'wrk', '-t', 1,
        '-c', $opt{connections}, '-d', ($opt{seconds} + 2) . 's',
        '--timeout', '5s', '-s', $LUA,
        'http://127.0.0.1:' . $t->port . '/mdm/checkin');
    delete $ENV{BENCH_DELAY};

    if ($stop) {
        kill 'STOP', $stop;
        $t->{paused} = 1;
    }
    sleep 0.5;

    my $r = wrk_fixed('/', undef, 200, undef, connections => 4);

    if ($stop) {
        kill 'CONT', $stop;
        $t->{paused} = 0;
    }
    $t->reap('gettoken', $opt{seconds} + 10)
        // $t->stop_process('gettoken');

    # the module connects to Redis again after its outage
    sleep 1.5 if $stop;
    return $r;
}

# resident memory of the worker before and after many mixed requests
sub memory {
    my ($worker) = $t->worker_pids;
    my $before = MdmWatch::Test::rss_kb($worker);
    my $mix = 'tctgtcptcwtctgpctcpt';
    my $total = 0;
    my $start = time;

    progress("memory: $opt{mixed} mixed requests ($mix), at most"
        . " $opt{mixed_limit} s");
    my $rate = 20_000;
    while ($total < $opt{mixed} && time - $start < $opt{mixed_limit}) {
        my $seconds = ceil(($opt{mixed} - $total) / $rate) + 1;
        $seconds = 30 if $seconds > 30;
        # security tokens for GetTokens at up to three times that rate
        my $gt = ceil($seconds * $rate * 3 * 2 / length $mix) + 1000;
        my $first = token_range($gt);
        my $r = wrk(seconds => $seconds, path => '/', env => {
            BENCH_MODE => 'mixed', BENCH_MIX => $mix,
            BENCH_GETTOKEN => $input{gettoken}, BENCH_FIRST => $first,
            BENCH_SPAN => $gt, BENCH_CHALLENGE => $input{challenge},
            BENCH_TOKEN_UPDATE => $input{token_update},
            BENCH_COMMAND => $input{command},
        });
        $total += $r->{requests};
        $rate = $r->{rate} if $r->{rate} > 100;
        progress(sprintf 'memory: %d requests so far, %.0f/s', $total,
            $r->{rate});
    }

    my ($after_pid) = $t->worker_pids;
    die "bench: the worker changed during the memory run\n"
        unless $after_pid == $worker;
    my $after = MdmWatch::Test::rss_kb($worker);
    $figures{memory} = [$before, $after, $total];
}

# Redis memory per record, from INFO memory deltas over many records
# written as the module's scripts write them
sub redis_memory {
    my $n = 100_000;
    my %scripts = (
        'pair (pair hash and a phone set of one watch)' => q{
            for i = 1, tonumber(ARGV[1]) do
                local w = string.format('00008301-%016X', i)
                local p = string.format('00008110-%016X', i)
                redis.call('HSET', 'mdm_watch:pair:' .. w, 'watch_udid', w,
                    'phone_udid', p, 'serial', 'WTCHSERIAL01',
                    'product', 'Watch7,1', 'version', '21R355',
                    'os_version', '10.0', 'paired_at', '1764870000',
                    'state', 'paired')
                redis.call('SADD', 'mdm_watch:phone:' .. p, w)
            end
            return 1
        },
        'security token (its key and a challenges list of one)' => q{
            for i = 1, tonumber(ARGV[1]) do
                local w = string.format('00008301-%016X', i)
                local t = string.format('3F2504E0-4F89-41D3-9A0C-%012X', i)
                redis.call('SET', 'mdm_watch:security_token:' .. t, w,
                    'EX', 600)
                redis.call('LPUSH', 'mdm_watch:challenges:' .. w, t)
                redis.call('EXPIRE', 'mdm_watch:challenges:' .. w, 600)
            end
            return 1
        },
        'pairing token (its record)' => q{
            for i = 1, tonumber(ARGV[1]) do
                local w = string.format('00008301-%016X', i)
                redis.call('SET', 'mdm_watch:pairing_token:'
                    .. string.format('%032x', i),
                    w .. ' 00008110-000A1B2C3D4E5F60', 'EX', 600)
            end
            return 1
        },
    );

    progress('Redis memory per record');
    $t->redis('FLUSHALL');
    for my $what (sort keys %scripts) {
        my $before = used_memory();
        $t->redis('EVAL', $scripts{$what}, 0, $n);
        my $after = used_memory();
        $figures{redis}{$what} = ($after - $before) / $n;
        $t->redis('FLUSHALL');
    }
    enroll_phone();
}

sub used_memory {
    my $info = $t->redis('INFO', 'memory');
    my ($bytes) = $info =~ /^used_memory:(\d+)/m;
    return $bytes;
}

# the challenge and GetToken rates of 1 and 2 workers, alternately
sub scaling {
    my %r;
    my $rounds = $opt{rounds} > 3 ? 3 : $opt{rounds};

    for my $round (1 .. $rounds) {
        for my $workers (1, 2) {
            restart_module($workers);
            my $c = wrk_fixed('/mdm/enroll/watch', $input{challenge}, 403,
                $MdmWatch::Test::CMS_TYPE);
            my $g = wrk_gettoken();
            push @{ $r{$workers}{challenge} }, $c->{rate};
            push @{ $r{$workers}{GetToken} }, $g->{rate};
            progress(sprintf 'scaling          round %d, %d worker%s:'
                . ' challenge %.0f/s, GetToken %.0f/s', $round, $workers,
                $workers > 1 ? 's' : '', $c->{rate}, $g->{rate});
        }
    }
    restart_module(1);

    for my $what (qw(challenge GetToken)) {
        $figures{scaling}{$what} = [ median(@{ $r{1}{$what} }),
                                     median(@{ $r{2}{$what} }) ];
    }
}

# --- the report ---------------------------------------------------------

sub machine {
    my ($cpu) = `lscpu` =~ /^Model name:\s+(.*)$/m;
    my ($mem) = MdmWatch::Test::slurp('/proc/meminfo') =~ /MemTotal:\s+(\d+)/;
    my $cores = `nproc`;
    chomp $cores;
    return sprintf '%s, %d cores, %.1f GB of memory', $cpu // 'unknown CPU',
        $cores, $mem / 1024 / 1024;
}

sub versions {
    my $nginx = `nginx -v 2>&1`;
    my $openssl = `openssl version`;
    my $plist = `pkg-config --modversion libplist-2.0`;
    my $hiredis = `pkg-config --modversion hiredis`;
    my $redis = `redis-server --version`;
    my $wrk = `wrk -v 2>&1`;

    ($nginx) = $nginx =~ m{nginx/(\S+)};
    ($openssl) = $openssl =~ /OpenSSL (\S+)/;
    ($redis) = $redis =~ /v=(\S+)/;
    ($wrk) = $wrk =~ /^wrk (\S+)/;
    chomp($plist, $hiredis);
    return "nginx $nginx, OpenSSL $openssl, libplist $plist,\n"
        . "  hiredis $hiredis, Redis $redis, wrk $wrk";
}

sub report {
    my $s = '';
    $s .= sprintf "Run of %s.\n\n", strftime('%Y-%m-%d %H:%M UTC', gmtime);
    $s .= sprintf "- Machine: %s.\n", machine();
    $s .= sprintf "- Versions: %s.\n", versions();
    $s .= sprintf "- %d rounds of %s s per row, wrk with 1 thread and %d\n"
        . "  connections, nginx with 1 worker; medians.\n\n", $opt{rounds},
        $opt{seconds}, $opt{connections};

    $s .= "| row | the module | its reference | module | reference"
        . " | ratio | target | |\n";
    $s .= "|---|---|---|---:|---:|---:|---|---|\n";
    for my $r (@rows) {
        $s .= "| $r->{name} | $r->{what} | $r->{ref} | $r->{module}"
            . " | $r->{reference} | $r->{ratio} | $r->{target} | $r->{met} |\n";
    }

    if (my $m = $figures{memory}) {
        $s .= sprintf "\nMemory of the worker (RSS): %d KB before, %d KB"
            . " after\n%d mixed requests (%+d KB).\n", $m->[0], $m->[1],
            $m->[2], $m->[1] - $m->[0];
    }

    if (my $r = $figures{redis}) {
        $s .= "\nRedis memory per record (`used_memory` delta over"
            . " 100,000):\n\n";
        $s .= sprintf "- %s: %.0f bytes\n", $_, $r->{$_} for sort keys %$r;
    }

    if (my $sc = $figures{scaling}) {
        $s .= "\nFrom 1 to 2 workers (medians of 3 rounds each):\n\n";
        $s .= "| | 1 worker | 2 workers | ratio |\n|---|---:|---:|---:|\n";
        for my $what (qw(challenge GetToken)) {
            my ($one, $two) = @{ $sc->{$what} };
            $s .= sprintf "| %s | %.0f/s | %.0f/s | %.2f |\n", $what, $one,
                $two, $two / $one;
        }
    }
    return $s;
}

sub write_report {
    my ($text) = @_;
    my $file = $opt{report};
    my $doc = -f $file ? MdmWatch::Test::slurp($file) : '';
    my ($begin, $end) = ('<!-- bench:begin -->', '<!-- bench:end -->');

    if ($doc =~ /\Q$begin\E.*\Q$end\E/s) {
        $doc =~ s/\Q$begin\E.*\Q$end\E/$begin\n$text$end/s;
    } else {
        $doc .= "\n$begin\n$text$end\n";
    }
    MdmWatch::Test::spew($file, $doc);
    progress("wrote $file");
}
