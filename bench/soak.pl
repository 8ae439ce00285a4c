#!/usr/bin/perl

# A soak: nginx with the module, a private Redis and the stand-in MDM
# server on loopback, under a steady mix of whole pairings, check-ins
# passed through, command traffic and the hostile corpus of t/hostile,
# for a bounded time.  Every minute it samples each worker's resident
# memory; at the end it reports the samples, the requests by kind and
# status, answers that were not the expected ones, and whether any
# worker died or was replaced.
#
#   perl bench/soak.pl [--minutes 30] [--clients 4] [--warmup 5]
#                      [--report docs/soak.md]
#
# It fails (exit 1) when a worker crashed or was replaced, when an
# answer was not the expected one, or when the memory of a worker grew
# by more than 5% between the end of the warm-up and the end.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../t/lib";

use Getopt::Long;
use POSIX qw(strftime);
use Time::HiRes qw(time sleep);

use MdmWatch::Message qw(machine_info token_update command_result);
use MdmWatch::Test;

my %opt = (minutes => 30, clients => 4, warmup => 5, workers => 2,
           report => undef);
GetOptions(\%opt, 'minutes=f', 'clients=i', 'warmup=f', 'workers=i',
    'report=s') or die "usage: see the head of $0\n";

die "--warmup must be shorter than --minutes\n"
    unless $opt{warmup} < $opt{minutes};

my $corpus = "$FindBin::Bin/../t/hostile";
my @hostile = read_manifest("$corpus/MANIFEST");

my $t = MdmWatch::Test->new;
my $dir = $t->dir;
$t->start_redis;
$t->start_upstream;
$t->write_config($t->default_http, worker_processes => $opt{workers});
tune_config();
$t->start_nginx;

my @workers = $t->wait_workers($opt{workers});
die "nginx did not start $opt{workers} workers\n"
    unless @workers == $opt{workers};

my $start = time;
my $end = $start + $opt{minutes} * 60;

printf "soak: %s minutes, %d clients, %d workers (%s), corpus of %d cases\n",
    $opt{minutes}, $opt{clients}, $opt{workers}, join(' ', @workers),
    scalar @hostile;

my @clients;
for my $n (1 .. $opt{clients}) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        client($n, $end);
        POSIX::_exit(0);
    }
    push @clients, $pid;
}

# one sample a minute, and a last one at the end

my @samples;
my $next = $start;
while (1) {
    my $now = time;
    if ($now >= $next) {
        push @samples, sample($now - $start);
        $next += 60;
    }
    last if $now >= $end;
    sleep(($next < $end ? $next : $end) - $now) if $next > $now;
}
push @samples, sample(time - $start)
    if $samples[-1]{t} < $opt{minutes} * 60 - 5;

waitpid($_, 0) for @clients;

my @now = $t->worker_pids;
my @crashes = $t->crashes;
my %count = tally();

report();

$t->stop_all;

exit(verdict() ? 0 : 1);


sub client {
    my ($n, $deadline) = @_;
    my $log = "$dir/client-$n.log";
    open my $out, '>', $log or die "$log: $!";
    $out->autoflush(1);

    srand($$ ^ time);

    # a small pool of watches, so that the pair records stay bounded
    my $phone = sprintf '00008110-0000000000%06d', $n;
    my %challenge_body;

    # the phone enrolls first: only enrolled phones get pairing tokens
    $t->enroll_phone(udid => $phone);

    while (time < $deadline) {
        my $dice = rand 100;

        if ($dice < 15) {
            my $watch = sprintf '00008301-%016X', $n * 1000 + int rand 50;
            my $body = $challenge_body{$watch}
                //= $t->machine_info_body(UDID => $watch);
            record($out, 'challenge', 403, $t->enroll(body => $body));

        } elsif ($dice < 25) {
            pairing($out, $phone, $n);

        } elsif ($dice < 50) {
            record($out, 'token-update', 200,
                $t->checkin(token_update(udid => $phone)));

        } elsif ($dice < 70) {
            record($out, 'command', 200, $t->request(method => 'PUT',
                uri => '/mdm/connect', headers => [['Content-Type',
                'application/x-apple-aspen-mdm']],
                body => command_result(udid => $phone)));

        } elsif ($dice < 90 && @hostile) {
            my $case = $hostile[int rand @hostile];
            hostile($out, $case);

        } else {
            record($out, 'plain', 200,
                $t->request(method => 'GET', uri => '/health'));
        }
    }

    close $out;
}

sub pairing {
    my ($out, $phone, $n) = @_;
    my $watch = sprintf '00008301-%016X', $n * 1000 + 500 + int rand 50;

    my $res = $t->enroll(UDID => $watch);
    record($out, 'pairing-challenge', 403, $res);
    my $st = MdmWatch::Test::challenge_token($res) // return;

    $res = $t->get_token_response(udid => $phone, security_token => $st,
        watch_udid => $watch);
    record($out, 'pairing-get-token', 200, $res);
    return unless ($res->{status} // 0) == 200;

    my $token = MdmWatch::Message::parse_token_data($res->{body});
    record($out, 'pairing-enroll', 200,
        $t->enroll(UDID => $watch, PAIRING_TOKEN => $token));
}

sub hostile {
    my ($out, $case) = @_;
    my $body = MdmWatch::Test::slurp("$corpus/$case->{file}");
    my @ct = $case->{type} eq '-' ? () : (['Content-Type', $case->{type}]);
    my ($status) = $case->{expect} =~ /^(\d+)/;

    my $res = $case->{location} eq 'enroll'
        ? $t->request(method => 'POST', uri => $MdmWatch::Test::ENROLL_URI,
              headers => \@ct, body => $body)
        : $t->request(method => 'PUT', uri => $MdmWatch::Test::CHECKIN_URI,
              headers => \@ct, body => $body);

    record($out, "hostile", $status, $res, $case->{file});
}

sub record {
    my ($out, $kind, $expect, $res, $what) = @_;
    my $status = $res->{status} // 'none';
    my $ok = $status eq $expect ? 'ok' : 'unexpected';
    print $out join(' ', $kind, $status, $ok, $what // '-'), "\n";
}

sub sample {
    my ($elapsed) = @_;
    my %rss = map { $_ => MdmWatch::Test::rss_kb($_) } $t->worker_pids;
    my $keys = $t->redis('DBSIZE');
    my $s = { t => $elapsed, rss => \%rss, keys => $keys };
    printf "%6.1f min  %s  redis keys %s\n", $elapsed / 60,
        join('  ', map { "$_: " . ($rss{$_} // '?') . " kB" } sort keys %rss),
        $keys // '?';
    return $s;
}

sub tally {
    my %c;
    for my $log (glob "$dir/client-*.log") {
        open my $in, '<', $log or next;
        while (<$in>) {
            my ($kind, $status, $ok, $what) = split;
            $c{"$kind $status"}++;
            $c{unexpected}++ if $ok ne 'ok';
            $c{"unexpected $kind $status $what"}++ if $ok ne 'ok';
            $c{total}++;
        }
    }
    return %c;
}

sub growth {
    my ($pid) = @_;
    my ($base) = grep { $_->{t} >= $opt{warmup} * 60 } @samples;
    my $last = $samples[-1];
    return undef unless $base && $base->{rss}{$pid} && $last->{rss}{$pid};
    return ($last->{rss}{$pid} - $base->{rss}{$pid}) / $base->{rss}{$pid};
}

sub verdict {
    return 0 if @crashes;
    return 0 if join(' ', @now) ne join(' ', @workers);
    return 0 if $count{unexpected};
    for my $pid (@workers) {
        my $g = growth($pid);
        return 0 if !defined $g || $g > 0.05;
    }
    return 1;
}

sub report {
    my @lines;
    my $when = strftime('%Y-%m-%d %H:%M UTC', gmtime $start);
    chomp(my $nginx = `nginx -v 2>&1`);

    push @lines, "## Soak of $when", '',
        sprintf('%s minutes, %d clients, %d workers, %s, warm-up %s '
            . 'minutes.', $opt{minutes}, $opt{clients}, $opt{workers},
            $nginx, $opt{warmup}), '';

    push @lines, '| minute | ' . join(' | ', map { "worker $_ RSS (kB)" }
        @workers) . ' | Redis keys |';
    push @lines, '|---' x (@workers + 2) . '|';
    for my $s (@samples) {
        push @lines, sprintf '| %.1f | %s | %s |', $s->{t} / 60,
            join(' | ', map { $s->{rss}{$_} // 'gone' } @workers),
            $s->{keys} // '?';
    }

    push @lines, '', '| requests | count |', '|---|---|';
    for my $k (sort grep { !/^unexpected|^total$/ } keys %count) {
        push @lines, "| $k | $count{$k} |";
    }
    push @lines, "| total | " . ($count{total} // 0) . " |";

    push @lines, '', 'Memory growth after the warm-up: '
        . join(', ', map {
            my $g = growth($_);
            defined $g ? sprintf('worker %d %+.2f%%', $_, 100 * $g)
                       : "worker $_ unknown"
        } @workers) . '.';
    push @lines, 'Workers at the end: ' . join(' ', @now)
        . (join(' ', @now) eq join(' ', @workers)
            ? ' (the same processes: no restart).' : ' (REPLACED).');
    push @lines, 'Crashes in the error log: ' . scalar(@crashes) . '.';
    push @lines, 'Unexpected answers: ' . ($count{unexpected} // 0) . '.';
    for my $k (sort grep { /^unexpected / } keys %count) {
        push @lines, "    $k: $count{$k}";
    }
    push @lines, 'Verdict: ' . (verdict() ? 'pass' : 'FAIL') . '.', '';

    my $text = join "\n", @lines;
    print "\n$text";

    if ($opt{report}) {
        open my $fh, '>>', $opt{report} or die "$opt{report}: $!";
        print $fh "\n$text";
        close $fh;
    }
}

sub tune_config {
    my $conf = MdmWatch::Test::slurp("$dir/nginx.conf");

    # a debug log would fill the disk in half an hour
    $conf =~ s{(error_log\s+\S+)\s+debug;}{$1 warn;};

    # the corpus is signed under its own committed CA: both are trusted
    if (-f "$corpus/pki/ca.pem") {
        my $bundle = "$dir/ca-bundle.pem";
        MdmWatch::Test::spew($bundle,
            MdmWatch::Test::slurp($t->pki->ca_file)
            . MdmWatch::Test::slurp("$corpus/pki/ca.pem"));
        $conf =~ s{mdm_watch_trusted_certificate\s+[^;]*;}
                  {mdm_watch_trusted_certificate $bundle;};
    }

    MdmWatch::Test::spew("$dir/nginx.conf", $conf);
}

sub read_manifest {
    my ($file) = @_;
    open my $in, '<', $file or return ();
    my @cases;
    while (<$in>) {
        next if /^\s*(#|$)/;
        my ($f, $loc, $type, $expect, $known) = split;
        next if $known ne '-';
        push @cases, { file => $f, location => $loc, type => $type,
                       expect => $expect };
    }
    return @cases;
}
