package MdmWatch::Pairs;

# For the tests of mdm_watch_pairs: pairing a watch through the whole
# flow, writing pairs straight into Redis in the module's layout, many at
# a time, and reading the pairs location.

use strict;
use warnings;

use Carp qw(croak);
use Exporter qw(import);
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time);

use MdmWatch::Test;

our $VERSION = '1';

our @EXPORT_OK = qw(pair store_pairs remove_pairs get_pairs json_strict);

our $URI = '/pairs';

=head1 NAME

MdmWatch::Pairs - pairs for the tests of the mdm_watch_pairs location

=head1 FUNCTIONS

C<pair($t, $watch, $phone, %machine_info)> pairs a watch with a phone
through the module, from the challenge to the enrollment, and dies if
it does not succeed; the phone must be enrolled.

C<store_pairs($t, @pairs)> writes pairs ({watch, phone, serial,
product, version, os_version, paired_at, state}) into Redis as the
module does, with both indexes, over one pipelined connection.
C<remove_pairs($t, @watches)> removes them again, as a watch's
CheckOut does.

C<get_pairs($t, $query, %request)> GETs the pairs location as JSON and
returns the response and its body parsed by C<json_strict>, a strict
JSON parser (undef if it does not parse).

=cut

sub pair {
    my ($t, $watch, $phone, %mi) = @_;
    my $st = $t->challenge(UDID => $watch, %mi)
        // croak "no challenge for $watch";
    my $token = $t->get_token(udid => $phone, security_token => $st,
        watch_udid => $watch) // croak "no pairing token for $phone";
    my $res = $t->enroll(UDID => $watch, PAIRING_TOKEN => $token, %mi);
    croak "the watch $watch is not paired: " . MdmWatch::Test::describe($res)
        unless $res->{status} == 200;
    return $res;
}

sub store_pairs {
    my ($t, @pairs) = @_;
    my @cmds;

    for my $p (@pairs) {
        my %h = (
            watch_udid => $p->{watch},
            phone_udid => $p->{phone},
            serial     => $p->{serial} // '',
            product    => $p->{product} // 'Watch7,1',
            version    => $p->{version} // '21R355',
            os_version => $p->{os_version} // '10.0',
            paired_at  => $p->{paired_at} // 1796407200,
            state      => $p->{state} // 'paired',
        );
        push @cmds, ['HSET', "mdm_watch:pair:$p->{watch}", %h],
            ['SADD', "mdm_watch:phone:$p->{phone}", $p->{watch}],
            ['ZADD', 'mdm_watch:pairs', 0, $p->{watch}];
        push @cmds, ['SET', 'mdm_watch:serial:' . uc $h{serial},
            $p->{watch}] if length $h{serial};
    }
    return pipeline($t, @cmds);
}

sub remove_pairs {
    my ($t, @watches) = @_;
    return pipeline($t, map {
        (['ZREM', 'mdm_watch:pairs', $_], ['DEL', "mdm_watch:pair:$_"])
    } @watches);
}

# the commands in one write, then their replies; an error reply dies
sub pipeline {
    my ($t, @cmds) = @_;
    return [] unless @cmds;

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $t->port('redis'), Proto => 'tcp', Timeout => 2)
        or croak "connect to redis: $!";
    binmode $s;

    my $req = '';
    for my $cmd (@cmds) {
        $req .= '*' . @$cmd . "\r\n";
        $req .= '$' . length($_) . "\r\n$_\r\n" for @$cmd;
    }
    $s->blocking(0);
    MdmWatch::Test::write_all($s, $req, time + 10)
        or croak "write to redis: $!";

    my $reader = { sock => $s, buf => '', deadline => time + 10 };
    my @replies = map { MdmWatch::Test::resp_read($reader) } @cmds;
    close $s;
    return \@replies;
}

sub json_strict {
    my ($text) = @_;
    return eval { JSON::PP->new->utf8->decode($text) };
}

sub get_pairs {
    my ($t, $query, %o) = @_;
    my $uri = $URI . (defined $query && length $query ? "?$query" : '');
    my $res = $t->request(uri => $uri,
        headers => [['Accept', 'application/json']], %o);
    return ($res, json_strict($res->{body} // ''));
}

1;
